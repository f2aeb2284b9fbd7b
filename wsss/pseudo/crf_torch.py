"""DenseCRF in PyTorch: what pydensecrf computes, on CPU or CUDA, batched over images.

The same model as :mod:`wsss.pseudo.crf` (pydensecrf's ``DenseCRF2D`` with a Gaussian and a
bilateral kernel, DIAG_KERNEL, NORMALIZE_SYMMETRIC, Potts compatibility, ``inference(iters)``),
written again from the description of Krähenbühl's C++ (densecrf, as shipped in pydensecrf2 1.1)
with tensor operations only:

* the permutohedral lattice (Adams et al. 2010) as the C++ builds it: the features (position /
  sxy, colour / srgb) are elevated onto the hyperplane of the (d+1)-dimensional lattice, each
  point finds its enclosing simplex (the nearest remainder-0 point by rounding, the ranks of the
  residuals) and its barycentric weights; the d+1 vertices of that simplex are the lattice points
  it splats to. The C++ hash table becomes an int64 code per vertex (image index, remainder,
  d coordinates divided by d+1): vertex ids by a direct-address table where the codes span
  little (position-only kernels) or by ``torch.unique`` (sorting) otherwise; blur neighbours by
  looking up the neighbouring codes (``torch.searchsorted`` on the sorted codes).
* filtering: splat with the barycentric weights, blur along each of the d+1 lattice directions
  j = 0..d with ``v + 0.5 * (v[n1] + v[n2])`` (absent neighbours count 0), slice with the weights
  times alpha = 1 / (1 + 2^-d); the kernel's symmetric normalisation 1 / sqrt(filter(ones)),
  applied before and after.
* mean field as ``DenseCRF::inference``: Q = softmax(-unary); each iteration
  tmp = -unary - sum_k (-compat_k) * norm_k * filter_k(norm_k * Q); Q = softmax(tmp).

Agreement with pydensecrf. Every float32 operation above is done in the C++'s order, so that on
a CPU the result is pydensecrf's bit for bit (tests/test_torch_crf.py checks it on x86-64 Linux):
splat sums in pixel order (``index_add_`` adds sequentially on a CPU), the slice's products in the
C++'s two orders (its scalar code for <= 2 labels, its SSE code above), the SSE build's extra
lattice points for the zero-feature padding lanes when H*W is not a multiple of 4, and
(``exact=True``) the softmax as Eigen 3.3 evaluates it: Cephes' polynomial exp (Eigen's pexp)
on each full packet of 4 labels, glibc's expf algorithm (in float64, as glibc) on the rest,
Eigen's packet order for the sum. With ``exact=False`` the softmax is ``torch.softmax``
(fewer operations; last-bit differences, which ten iterations can carry to a pixel on a
decision boundary). On CUDA the splat's atomic additions have no fixed order: results agree to
float rounding, not bitwise. tools/crf_agreement.py measures the agreement on VOC-sized images
(docs/results/crf_agreement.json).

Limits the C++ has and this does not: pydensecrf stores lattice coordinates as int16, so features
beyond about +-10,000 (e.g. sxy < 0.1 on a 500-pixel image) wrap there and do not here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsss.config import CRFConfig

__all__ = [
    "PermutohedralLattice",
    "TorchDenseCRF",
    "crf_labels_batch",
    "crf_labels_torch",
    "crf_probabilities_batch",
    "crf_probabilities_torch",
    "unary_from_labels_torch",
    "unary_from_softmax_torch",
]

F32 = torch.float32


# on a CPU the softmax runs over blocks of this many pixels: the temporaries of its ~25 passes
# then stay in the cache (2.5x faster than whole tensors; the lattice's gathers and scatters
# gained nothing from blocks); a GPU takes whole tensors
_CPU_BLOCK = 1 << 16


def _f32(x: float) -> float:
    """x rounded to float32 (a constant the C++ holds as a float), as a Python float."""
    return float(np.float32(x))


# --------------------------------------------------------------------------
# The permutohedral lattice
# --------------------------------------------------------------------------
def _scale_factors(d: int) -> list[float]:
    # inv_std_dev = sqrt(2/3) * (d+1) held as a float; each factor 1/sqrt((i+2)(i+1)) * inv_std_dev
    # computed in double and stored as a float
    inv_std_dev = np.float32(np.sqrt(2.0 / 3.0) * (d + 1))
    return [_f32(1.0 / np.sqrt(float((i + 2) * (i + 1))) * float(inv_std_dev)) for i in range(d)]


class PermutohedralLattice:
    """A permutohedral lattice over ``features`` [P, d] (float32), points of several images at once.

    ``image`` [P] (int64): the image of each point; points of different images never share a
    lattice vertex. ``pad`` [P] (bool): points that create lattice vertices but carry no value
    (the C++'s padding lanes, see :func:`lattice_points`); filtering takes and returns values for
    the other points only, in order.
    """

    # the vertex ids come from a direct-address table when the codes span at most this many
    # entries per code (position-only kernels), else from a sort (torch.unique) and searchsorted
    # (an open-addressing hash table in tensor rounds measured slower than searchsorted on a CPU)
    DENSE_FACTOR = 8

    def __init__(self, features: torch.Tensor, image: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if features.dim() != 2 or features.dtype != F32:
            raise ValueError(f"features must be a float32 [P, d] tensor, not {features.dtype} {tuple(features.shape)}")
        dev = features.device
        n, d = features.shape
        if n == 0 or d == 0:
            raise ValueError(f"features must be [P, d] with P, d > 0, not {tuple(features.shape)}")
        self.d = d
        d1 = d + 1
        image = torch.zeros(n, dtype=torch.long, device=dev) if image is None else image.to(dev, torch.long)
        inv = _f32(1.0 / d1)  # 1.0f / (d+1)
        f = features.T  # [d, n]: one row per coordinate

        # elevate: y = E f (p.5 of Adams et al.), sm the running sum of the scaled features
        sf = _scale_factors(d)
        elev = torch.empty(d1, n, dtype=F32, device=dev)
        sm = torch.zeros(n, dtype=F32, device=dev)
        for j in range(d, 0, -1):
            cf = f[j - 1] * sf[j - 1]
            torch.sub(sm, cf * j, out=elev[j])
            sm.add_(cf)
        elev[0] = sm

        # the closest remainder-0 point: round (to nearest even, as SSE's cvtps2dq) each coordinate
        v = torch.round(elev * inv)
        total = v.sum(0).long()  # small integers: exact in any order
        rem0 = v.mul_(d1)
        res = elev - rem0
        # the ranks of the residuals as the C++'s pairwise loop counts them (rank 0 = the largest):
        # for i < j, i gains one if res_i < res_j, else j does (on a tie the later coordinate
        # ranks as the smaller)
        rank = torch.zeros(d1, n, dtype=torch.long, device=dev)
        for i in range(d):
            for j in range(i + 1, d1):
                c = res[i] < res[j]
                rank[i] += c
                rank[j] += ~c
        # bring the point back onto the plane (ranks into 0..d)
        rank += total
        shift = (rank < 0).long().mul_(d1).sub_((rank >= d1).long().mul_(d1))
        rank += shift
        rem0 += shift.to(F32)

        # barycentric weights (p.10), by remainder: bary[p] = res'_(rank d-p) - res'_(rank d-p+1)
        # and bary[0] = res'_(rank d) + (1 - res'_(rank 0)), res' = (elevated - rem0) / (d+1)
        vres = (elev - rem0).mul_(inv)
        by_rank = torch.zeros_like(vres).scatter_(0, rank, vres)
        bary = torch.empty_like(vres)
        bary[0] = by_rank[d] + (1.0 - by_rank[0])
        bary[1:] = torch.flip(by_rank[:d] - by_rank[1:], dims=[0])

        # the simplex's vertex of remainder r: key_i = rem0_i + r - (d+1) [rank_i > d - r]. As one
        # int64 code: the image, r, and the first d coordinates divided by d+1 (the last is
        # implied), each shifted into 1..span-2 so that a neighbour (+-1) stays in 0..span-1
        q0 = torch.div(rem0[:d].long(), d1, rounding_mode="floor")  # [d, n]
        qmin = q0.min(1).values - 1
        span = q0.max(1).values - qmin + 3
        strides = [1] * d
        for i in range(d - 2, -1, -1):
            strides[i] = strides[i + 1] * int(span[i + 1])
        s_r = strides[0] * int(span[0])
        s_img = s_r * d1
        n_img = int(image.max()) + 1
        space = s_img * n_img
        if space >= 2 ** 62:
            raise ValueError(f"lattice too large for int64 vertex codes ({n_img} images, spans {span.tolist()}); "
                             "filter fewer images at once")
        stride_t = torch.tensor(strides, dtype=torch.long, device=dev)[:, None]
        code0 = image * s_img + ((q0 - qmin[:, None] + 1) * stride_t).sum(0)
        # sum of the strides of the coordinates with rank > d - r, by suffix sums over ranks
        by_rank_s = torch.zeros(d1, n, dtype=torch.long, device=dev).scatter_(0, rank[:d], stride_t.expand(d, n))
        suffix = by_rank_s.flip(0).cumsum(0)  # suffix[k] = sum over ranks >= d-k
        codes = torch.empty(d1, n, dtype=torch.long, device=dev)
        codes[0] = code0
        for r in range(1, d1):
            codes[r] = code0 + r * s_r - suffix[r - 1]

        flat = codes.reshape(-1)
        if space < 2 ** 31:  # sorting int32 takes half the time of int64
            flat = flat.int()
        if space <= self.DENSE_FACTOR * flat.numel():
            # a direct-address table: table[code] = vertex id + 1 (ids in code order), 0 if absent
            table = torch.zeros(space, dtype=torch.int32 if space < 2 ** 31 else torch.long, device=dev)
            table[flat.long()] = 1
            uniq = torch.nonzero(table).squeeze(1)
            self.M = int(uniq.numel())
            table[uniq] = torch.arange(1, self.M + 1, dtype=table.dtype, device=dev)
            offsets = table[flat.long()].view(d1, n)

            def lookup(c: torch.Tensor) -> torch.Tensor:
                return table[c]
        else:
            uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
            uniq = uniq.long()
            self.M = int(uniq.numel())
            offsets = inverse.view(d1, n) + 1

            def lookup(c: torch.Tensor) -> torch.Tensor:
                pos = torch.searchsorted(uniq, c).clamp_(max=self.M - 1)
                return torch.where(uniq[pos] == c, pos + 1, 0)
        # vertex ids shifted by one: row 0 of the values is the absent neighbour, always 0
        keep = slice(None) if pad is None or not bool(pad.any()) else ~pad.to(dev)
        self.offsets = offsets[:, keep].long().contiguous()  # [d+1, P] (int64: index_add_ is slower with int32)
        self.weights = bary[:, keep].contiguous()  # [d+1, P]
        self.alpha = _f32(1.0 / (1.0 + 2.0 ** -d))  # 1.0f / (1 + powf(2, -d))
        self.weights_alpha = self.weights * self.alpha
        self.n_points = int(self.offsets.shape[1])

        # blur neighbours along direction j: n1 = key - 1 + (d+1) e_j (e_d moves only the implied
        # last coordinate), in code space; n2 = key + 1 - (d+1) e_j is n1's inverse: u = n2(v)
        # exactly when v = n1(u)
        r_of = torch.div(uniq, s_r, rounding_mode="floor") % d1
        base1 = torch.where(r_of >= 1, uniq - s_r, uniq + (d * s_r - sum(strides)))
        e = strides + [0]
        queries = torch.stack([base1 + e[j] for j in range(d1)])  # [d+1, M]
        n1 = lookup(queries.view(-1)).view(d1, self.M).long()
        nb = torch.zeros(d1, 2, self.M + 1, dtype=torch.long, device=dev)
        nb[:, 0, 1:] = n1
        src = torch.arange(1, self.M + 1, device=dev).expand(d1, self.M)
        nb[:, 1].scatter_(1, n1, src)  # n2(n1(v)) = v; absent n1 (0) lands in column 0, dropped
        self.neighbours = nb[:, :, 1:].contiguous()
        self._work: dict = {}

    def _buffers(self, k: int, device) -> dict:
        key = (k, device)
        if key not in self._work:
            self._work.clear()  # one size at a time
            def z(*shape: int) -> torch.Tensor:
                return torch.zeros(*shape, dtype=F32, device=device)

            self._work[key] = {"values": z(k, self.M + 1), "new": z(k, self.M + 1), "ga": z(k, self.M),
                               "gb": z(k, self.M), "t": z(k, self.n_points)}
        return self._work[key]

    def compute(self, x: torch.Tensor, scalar_order: bool = False) -> torch.Tensor:
        """Filter ``x`` [K, P] (float32; K values per point, channel-major): splat, blur along
        j = 0..d, slice; returns [K, P].

        ``scalar_order``: the slice's product as the C++'s scalar code does it, (w * v) * alpha,
        which it runs for K <= 2 values per point; else its SSE code's (w * alpha) * v. When K
        stacks several label maps, pass what the number of labels alone would choose."""
        k, p = x.shape
        if p != self.n_points:
            raise ValueError(f"{p} values for a lattice over {self.n_points} points")
        b = self._buffers(k, x.device)
        values, new, ga, gb, t = b["values"], b["new"], b["ga"], b["gb"], b["t"]
        values.zero_()
        # splat: a vertex is reached through one remainder only, and index_add_ adds in index
        # order, so each vertex's sum runs in pixel order, as the C++'s
        for r in range(self.d + 1):
            torch.mul(x, self.weights[r], out=t)
            values.index_add_(1, self.offsets[r], t)
        for j in range(self.d + 1):
            n1, n2 = self.neighbours[j]
            torch.index_select(values, 1, n1, out=ga)
            torch.index_select(values, 1, n2, out=gb)
            # old + 0.5 * (a + b): the halving is exact, so add's alpha (fused or not) rounds once, as the C++
            torch.add(values[:, 1:], ga.add_(gb), alpha=0.5, out=new[:, 1:])
            values, new = new, values
        out = torch.empty(k, p, dtype=F32, device=x.device)
        for r in range(self.d + 1):
            g = out if r == 0 else t
            torch.index_select(values, 1, self.offsets[r], out=g)
            if scalar_order:
                g.mul_(self.weights[r]).mul_(self.alpha)
            else:
                g.mul_(self.weights_alpha[r])
            if r:
                out.add_(g)
        return out


def lattice_points(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack per-image features [n_i, d] into the lattice's (features, image, pad).

    pydensecrf's SSE lattice builds points in blocks of 4 and inserts the lattice vertices of the
    last block's empty lanes (features all 0) too; they carry no value but take part in the blur.
    This appends those ((-n_i) mod 4 zero points per image) so the lattice is the C++'s."""
    feats, image, pad = [], [], []
    for b, f in enumerate(features):
        n_pad = (-f.shape[0]) % 4
        feats.append(f)
        if n_pad:
            feats.append(torch.zeros(n_pad, f.shape[1], dtype=F32, device=f.device))
        m = f.shape[0] + n_pad
        image.append(torch.full((m,), b, dtype=torch.long, device=f.device))
        pd = torch.zeros(m, dtype=torch.bool, device=f.device)
        pd[f.shape[0]:] = True
        pad.append(pd)
    return torch.cat(feats), torch.cat(image), torch.cat(pad)


# --------------------------------------------------------------------------
# Softmax as Eigen evaluates expAndNormalize
# --------------------------------------------------------------------------
_EXP = {k: _f32(v) for k, v in {
    "hi": 88.3762626647950, "lo": -88.3762626647949, "log2e": 1.44269504088896341, "c1": 0.693359375,
    "c2": -2.12194440e-4, "p0": 1.9875691500e-4, "p1": 1.3981999507e-3, "p2": 8.3334519073e-3,
    "p3": 4.1665795894e-2, "p4": 1.6666665459e-1, "p5": 5.0000001201e-1}.items()}


def _packet_exp(x: torch.Tensor) -> torch.Tensor:
    """Eigen 3.3's pexp<Packet4f> (Cephes' expf, SSE2 without FMA: every multiply-add rounds twice)."""
    c = _EXP
    x0 = x
    x = x.clamp(max=c["hi"]).clamp(min=c["lo"])
    fx = torch.floor(x * c["log2e"] + 0.5)
    x = (x - fx * c["c1"]) - fx * c["c2"]
    z = x * x
    y = torch.full_like(x, c["p0"])
    for k in ("p1", "p2", "p3", "p4", "p5"):
        y = y * x + c[k]
    y = (y * z + x) + 1.0
    two_n = ((fx.to(torch.int32) + 127) << 23).view(F32)
    return torch.maximum(y * two_n, x0)


def _exp2_table() -> list[int]:
    """The bits of 2^(i/32) (correctly rounded doubles) minus i << 47, i = 0..31."""
    import decimal
    import struct

    ctx = decimal.Context(prec=60)
    out = []
    for i in range(32):
        v = float(ctx.power(decimal.Decimal(2), ctx.divide(decimal.Decimal(i), decimal.Decimal(32))))
        out.append(struct.unpack("<q", struct.pack("<d", v))[0] - (i << 47))
    return out


_EXP2_TAB = _exp2_table()
_INV_LN2_32 = float.fromhex("0x1.71547652b82fep+0") * 32  # 1/ln 2 (the double nearest), times 32
# the cubic of glibc's expf (sysdeps/ieee754/flt-32, 2^(r/32) ~ 1 + a1 r + a2 r^2 + a3 r^3 for
# |r| <= 1/2): coefficients of its minimax fit, the only numbers here not derived from their definition
_EXPF_A = [float.fromhex(h) / 32.0 ** k for h, k in
           (("0x1.62e42ff0c52d6p-1", 1), ("0x1.ebfce50fac4f3p-3", 2), ("0x1.c6af84b912394p-5", 3))]
_tab_cache: dict = {}


def _libm_expf(x: torch.Tensor) -> torch.Tensor:
    """expf as glibc >= 2.28 computes it (what Eigen's scalar path calls), for x <= 0: in double,
    x / ln2 * 32 = k + r (k the nearest integer, |r| <= 1/2), exp(x) = 2^(k/32) * 2^(r/32) with
    2^(k/32) from a 32-entry table and an exponent shift, 2^(r/32) by a cubic, then rounded to
    float. glibc picks an FMA build on CPUs with FMA; the unfused products here change the double
    result by about 2^-52 relative, which moves its float rounding only in about one evaluation in
    2^28. Below -103.97 glibc returns 0; so does the rounding here (x is clamped at -150 to keep
    the exponent arithmetic in range)."""
    tab = _tab_cache.get(x.device)
    if tab is None:
        tab = _tab_cache[x.device] = torch.tensor(_EXP2_TAB, dtype=torch.int64, device=x.device)
    z = x.double().clamp_(min=-150.0).mul_(_INV_LN2_32)
    kd = torch.round(z)  # to nearest, ties to even: what adding and subtracting 1.5 * 2^52 does in glibc
    r = z.sub_(kd)
    k = kd.long()
    s = tab.index_select(0, (k & 31).view(-1)).view(k.shape).add_(k.mul_(1 << 47)).view(torch.float64)
    a1, a2, a3 = _EXPF_A
    y = torch.mul(r, a3, out=kd).add_(a2).mul_(r * r)
    y.add_(r.mul_(a1).add_(1.0)).mul_(s)
    return y.to(F32)


def _softmax_eigen(t: torch.Tensor) -> torch.Tensor:
    """expAndNormalize over dimension 0 (the labels) in Eigen's order: subtract the max, exp
    (packets of 4 labels by :func:`_packet_exp`, the rest by expf), sum (packets added in Eigen's
    two-accumulator order, then horizontally, then the rest in order), divide."""
    flat = t.reshape(t.shape[0], -1)
    m = flat.shape[1]
    if t.device.type != "cpu" or m <= _CPU_BLOCK:
        return _softmax_block(flat).view(t.shape)
    out = torch.empty_like(flat)
    for i in range(0, m, _CPU_BLOCK):
        out[:, i:i + _CPU_BLOCK] = _softmax_block(flat[:, i:i + _CPU_BLOCK])
    return out.view(t.shape)


def _softmax_block(t: torch.Tensor) -> torch.Tensor:
    c = t.shape[0]
    if c == 2:  # the label that is not the maximum has b = -|t0 - t1|, the maximum exp(0) = 1
        first = t[0] >= t[1]
        small = _libm_expf(torch.sub(t[0], t[1]).abs_().neg_())
        total = small + 1.0
        one = torch.ones_like(small)
        return torch.stack([torch.where(first, one, small), torch.where(first, small, one)]).div_(total)
    mx = t[0]
    for k in range(1, c):
        mx = torch.maximum(mx, t[k])
    b = t - mx
    nv = (c // 4) * 4
    if nv == 0:
        e = _libm_expf(b)
    else:
        e = torch.empty_like(b)
        e[:nv] = _packet_exp(b[:nv])
        if nv < c:
            e[nv:] = _libm_expf(b[nv:])
    if nv == 0:
        s = e[0] + e[1] if c > 1 else e[0].clone()
        for k in range(2, c):
            s.add_(e[k])
    else:
        packets = [e[i:i + 4] for i in range(0, nv, 4)]
        acc = packets[0]
        if len(packets) > 1:
            acc1 = packets[1]
            end2 = (c // 8) * 8
            for i in range(8, end2, 8):
                acc = acc + packets[i // 4]
                acc1 = acc1 + packets[i // 4 + 1]
            acc = acc + acc1
            if nv > end2:
                acc = acc + packets[end2 // 4]
        s = (acc[0] + acc[2]).add_(acc[1] + acc[3])
        for k in range(nv, c):
            s.add_(e[k])
    return e.div_(s)


# --------------------------------------------------------------------------
# Unaries
# --------------------------------------------------------------------------
def _label_energies(n_labels: int, gt_prob: float) -> tuple[float, float]:
    """(energy of the other labels, energy of the given label) as pydensecrf.utils computes them."""
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must be in (0, 1), not {gt_prob}")
    n_energy = _f32(-np.log((1.0 - gt_prob) / (n_labels - 1))) if n_labels > 1 else 0.0
    return n_energy, _f32(-np.log(gt_prob))


def unary_from_labels_torch(labels, n_labels: int, gt_prob: float = 0.7, device=None) -> torch.Tensor:
    """pydensecrf.utils.unary_from_labels(labels, n_labels, gt_prob, zero_unsure=False) as a
    float32 tensor [n_labels, *labels.shape]: -log(gt_prob) at each pixel's label,
    -log((1 - gt_prob) / (n_labels - 1)) elsewhere."""
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels, device=device)
    if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
        raise ValueError(f"label maps must be integer arrays, not {lab.dtype}")
    lab = lab.long()
    _check_labels(lab, n_labels)
    n_e, p_e = _label_energies(n_labels, gt_prob)
    u = torch.full((n_labels, *lab.shape), n_e, dtype=F32, device=lab.device)
    u.scatter_(0, lab[None], p_e)
    return u


def unary_from_softmax_torch(probs, clip: float = 1e-5, device=None) -> torch.Tensor:
    """pydensecrf.utils.unary_from_softmax(probs) (scale None): -log(clip(probs, clip, 1)) as a
    float32 tensor of probs' shape. A NumPy input is computed with NumPy's float32 log exactly as
    pydensecrf.utils does; a tensor with torch.log."""
    if torch.is_tensor(probs):
        return -torch.log(probs.to(device=device, dtype=F32).clamp(clip, 1.0))
    u = -np.log(np.clip(np.asarray(probs), clip, 1.0)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(u)).to(device)


def _check_labels(lab: torch.Tensor, n_labels: int) -> None:
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, not {n_labels}")
    if lab.numel():
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= n_labels:
            raise ValueError(f"label values must lie in 0..{n_labels - 1} (n_labels={n_labels}); found {lo}..{hi}")


# --------------------------------------------------------------------------
# The CRF
# --------------------------------------------------------------------------
def _as_image(img, device) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(img) if not torch.is_tensor(img) else img)
    if t.dtype != torch.uint8 or t.dim() != 3 or t.shape[2] != 3:
        raise ValueError(f"an image must be uint8 [H, W, 3], not {t.dtype} {tuple(t.shape)}")
    return t.to(device)


@dataclass
class _Kernel:
    lattice: PermutohedralLattice
    norm: torch.Tensor  # [P] 1 / sqrt(filter(ones))
    neg_compat: float  # -compat as a float


class TorchDenseCRF:
    """The pairwise part of pydensecrf's DenseCRF2D for a batch of images (any sizes): the
    Gaussian kernel (position / gauss_sxy, compat gauss_compat) and the bilateral kernel
    (position / bilateral_sxy, RGB / bilateral_srgb, compat bilateral_compat), in that order,
    with ``p.sxy_for`` scaling per image. Built once; :meth:`inference` runs mean field for any
    number of unaries (label maps) per image, all at once."""

    def __init__(self, images, p: CRFConfig, device=None):
        images = _image_list(images)
        if len(images) == 0:
            raise ValueError("no images")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.p = p
        ims = [_as_image(im, self.device) for im in images]
        self.sizes = [(int(im.shape[0]), int(im.shape[1])) for im in ims]
        self.counts = [h * w for h, w in self.sizes]
        gauss, bilat = [], []
        for im, (h, w) in zip(ims, self.sizes):
            g_sxy, b_sxy = p.sxy_for(h, w)
            gauss.append(self._position(h, w, g_sxy))
            rgb = im.reshape(h * w, 3).to(F32) / self._scalar(p.bilateral_srgb)
            bilat.append(torch.cat([self._position(h, w, b_sxy), rgb], 1))
        self.kernels = [self._kernel(gauss, p.gauss_compat), self._kernel(bilat, p.bilateral_compat)]

    def _scalar(self, v: float) -> torch.Tensor:
        # a 1-element tensor, not a Python scalar: CUDA divides by a scalar as a multiplication
        # by its reciprocal, which rounds differently from the C++'s division
        return torch.full((1,), _f32(v), dtype=F32, device=self.device)

    def _position(self, h: int, w: int, sxy: float) -> torch.Tensor:
        s = self._scalar(sxy)
        x = torch.arange(w, dtype=F32, device=self.device) / s
        y = torch.arange(h, dtype=F32, device=self.device) / s
        return torch.stack([x.repeat(h), y.repeat_interleave(w)], 1)  # pixel j*W+i: (i/sx, j/sy)

    def _kernel(self, feats: list[torch.Tensor], compat: float) -> _Kernel:
        lat = PermutohedralLattice(*lattice_points(feats))
        ones = torch.ones(1, lat.n_points, dtype=F32, device=self.device)
        raw = lat.compute(ones, scalar_order=True)[0]
        norm = (1.0 / torch.sqrt(raw.double() + 1e-20)).to(F32)  # in double, stored as float
        return _Kernel(lat, norm, -_f32(compat))

    @property
    def n_points(self) -> int:
        return sum(self.counts)

    def inference(self, unary: torch.Tensor, iters: int | None = None, exact: bool = True) -> torch.Tensor:
        """Mean field from ``unary`` [C, L, P] (float32; C labels, L independent label maps per
        image, P = all images' pixels in order, row-major): returns Q [C, L, P]. ``exact``: the
        softmax in Eigen's order (:func:`_softmax_eigen`), else torch.softmax."""
        iters = self.p.iters if iters is None else iters
        n = self.n_points
        if unary.dim() != 3 or unary.shape[2] != n:
            raise ValueError(f"unary must be [C, L, {n}], not {tuple(unary.shape)}")
        softmax = _softmax_eigen if exact else (lambda t: torch.softmax(t, 0))
        neg = -unary.to(self.device, F32)
        c, nl, _ = neg.shape
        q = softmax(neg)
        for _ in range(iters):
            tmp = neg
            for k in self.kernels:
                f = k.lattice.compute((q * k.norm).view(c * nl, n), scalar_order=c <= 2).view(c, nl, n).mul_(k.norm)
                tmp = tmp - f.mul_(k.neg_compat)
            q = softmax(tmp)
        return q

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-image views of a [..., P] tensor, each reshaped to [..., H, W]."""
        return [t.view(*x.shape[:-1], h, w) for t, (h, w) in zip(torch.split(x, self.counts, dim=-1), self.sizes)]


# --------------------------------------------------------------------------
# The two CRFs of wsss.pseudo.crf
# --------------------------------------------------------------------------
def _image_list(images) -> list:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim != 4:
            raise ValueError(f"a batch of images must be [B, H, W, 3], not {tuple(images.shape)}")
        return list(images)
    return list(images)


def _argmax0(q: torch.Tensor) -> torch.Tensor:
    """argmax over dimension 0, the first maximum (as np.argmax), by a pass per label (a strided
    argmax over a short first dimension is slow on a CPU)."""
    best = q[0].clone()
    am = torch.zeros(q.shape[1:], dtype=torch.long, device=q.device)
    for k in range(1, q.shape[0]):
        better = q[k] > best
        am.masked_fill_(better, k)
        torch.maximum(best, q[k], out=best)
    return am


def crf_labels_batch(images, label_maps, n_labels: int | Sequence[int], p: CRFConfig, device=None,
                     exact: bool = True) -> list[list[np.ndarray]]:
    """The label CRF for a batch: ``images[b]`` (uint8 HxWx3) with its list ``label_maps[b]``
    (values 0..n_labels[b]-1, each HxW); returns the argmax maps (int64 numpy) per image, as
    :func:`wsss.pseudo.crf.crf_labels` would. The lattices are built once per image; images with
    the same number of labels run in one batch (fewer label maps are padded with copies)."""
    images = _image_list(images)
    if len(label_maps) != len(images):
        raise ValueError(f"{len(images)} images but {len(label_maps)} lists of label maps")
    ns = [int(n_labels)] * len(images) if isinstance(n_labels, (int, np.integer)) else [int(n) for n in n_labels]
    if len(ns) != len(images):
        raise ValueError(f"{len(images)} images but {len(ns)} n_labels")
    out: list[list[np.ndarray]] = [[] for _ in images]
    groups: dict[int, list[int]] = {}
    for b, maps in enumerate(label_maps):
        if len(maps):
            groups.setdefault(ns[b], []).append(b)
    for c, idx in groups.items():
        crf = TorchDenseCRF([images[b] for b in idx], p, device)
        nl = max(len(label_maps[b]) for b in idx)
        unaries = []
        for b, (h, w) in zip(idx, crf.sizes):
            maps = []
            for lab in label_maps[b]:
                lab = torch.as_tensor(np.asarray(lab) if not torch.is_tensor(lab) else lab)
                if tuple(lab.shape) != (h, w):
                    raise ValueError(f"label map of shape {tuple(lab.shape)} for an image of {h}x{w}")
                maps.append(unary_from_labels_torch(lab, c, p.gt_prob, crf.device).view(c, h * w))
            maps += [maps[-1]] * (nl - len(maps))  # mean field runs each label map on its own
            unaries.append(torch.stack(maps, 1))  # [C, L, hw]
        am = _argmax0(crf.inference(torch.cat(unaries, 2), exact=exact))
        for b, ab in zip(idx, crf.split(am)):
            ab = ab.cpu().numpy()
            out[b] = [ab[l] for l in range(len(label_maps[b]))]
    return out


def crf_labels_torch(img, label_maps: list, n_labels: int, p: CRFConfig, device=None,
                     exact: bool = True) -> list[np.ndarray]:
    """Drop-in for :func:`wsss.pseudo.crf.crf_labels` (``shared=True``): one image, its label maps."""
    return crf_labels_batch([img], [list(label_maps)], n_labels, p, device, exact)[0]


def crf_probabilities_batch(images, probs, p: CRFConfig, device=None, exact: bool = True,
                            as_numpy: bool = True) -> list:
    """The probability CRF (DeepLab's post-processing) for a batch: unary -log(clip(probs, 1e-5))
    per image (probs [C, H, W], the same C for all); returns the refined probabilities [C, H, W]
    per image (NumPy float32, or tensors on the device with ``as_numpy=False``)."""
    images = _image_list(images)
    if len(probs) != len(images):
        raise ValueError(f"{len(images)} images but {len(probs)} probability maps")
    crf = TorchDenseCRF(images, p, device)
    unaries = []
    c0 = None
    for pr, (h, w) in zip(probs, crf.sizes):
        if pr.ndim != 3 or tuple(pr.shape[1:]) != (h, w):
            raise ValueError(f"probabilities of shape {tuple(pr.shape)} for an image of {h}x{w} (need [C, {h}, {w}])")
        if c0 is not None and pr.shape[0] != c0:
            raise ValueError(f"probability maps with {c0} and {pr.shape[0]} classes in one batch")
        c0 = int(pr.shape[0])
        u = unary_from_softmax_torch(pr if torch.is_tensor(pr) else np.asarray(pr, np.float32), device=crf.device)
        unaries.append(u.reshape(c0, 1, h * w))
    q = crf.inference(torch.cat(unaries, 2), exact=exact)
    res = [qb[:, 0] for qb in crf.split(q)]
    return [r.cpu().numpy() for r in res] if as_numpy else res


def crf_probabilities_torch(img, probs, p: CRFConfig, device=None, exact: bool = True) -> np.ndarray:
    """Drop-in for :func:`wsss.pseudo.crf.crf_probabilities`: one image, probs [C, H, W]."""
    return crf_probabilities_batch([img], [probs], p, device, exact)[0]
