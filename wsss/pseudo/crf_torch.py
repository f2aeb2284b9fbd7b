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
  d coordinates divided by d+1) and ``torch.unique``; the blur neighbours come from
  ``torch.searchsorted`` on the sorted codes.
* filtering: splat with the barycentric weights, blur along each of the d+1 lattice directions
  j = 0..d with ``v + 0.5 * (v[n1] + v[n2])`` (absent neighbours count 0), slice with the weights
  times alpha = 1 / (1 + 2^-d); the kernel's symmetric normalisation 1 / sqrt(filter(ones)),
  applied before and after.
* mean field as ``DenseCRF::inference``: Q = softmax(-unary); each iteration
  tmp = -unary - sum_k (-compat_k) * norm_k * filter_k(norm_k * Q); Q = softmax(tmp).

Agreement with pydensecrf. Every float32 operation above is done in the C++'s order, so that on
a CPU the result is bitwise pydensecrf's in the usual case: splat sums in pixel order
(``index_add_`` is sequential on a CPU), the slice's products in the C++'s two orders (its
scalar code for <= 2 labels, its SSE code above), the SSE path's extra lattice points for the
zero-feature padding lanes when H*W is not a multiple of 4, and (``exact=True``) the softmax as
Eigen 3.3 evaluates it: Cephes' polynomial exp on each full packet of 4 labels, libm's expf on
the rest, Eigen's packet order for the sum. What remains is libm's expf against float64 exp
rounded to float32 (they differ by one ulp in rare cases). With ``exact=False`` the softmax is
``torch.softmax`` (fewer operations; ulp-level differences that 10 iterations can carry over to a
pixel on a decision boundary). On CUDA the splat's atomic additions have no fixed order, so
results agree to float rounding, not bitwise. ``docs/results/crf_agreement.json``
(tools/crf_agreement.py) measures it.

Limits the C++ has and this does not: pydensecrf stores lattice coordinates as int16, so features
beyond about +-10,000 (e.g. sxy < 0.1 on a 500-pixel image) wrap there and do not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from wsss.config import CRFConfig

__all__ = [
    "PermutohedralLattice",
    "TorchDenseCRF",
    "unary_from_labels_torch",
    "unary_from_softmax_torch",
    "crf_labels_torch",
    "crf_labels_batch",
    "crf_probabilities_torch",
    "crf_probabilities_batch",
]

F32 = torch.float32


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
    (the C++'s padding lanes, see :func:`lattice_points`); filtering returns values for the other
    points only, in order.
    """

    def __init__(self, features: torch.Tensor, image: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if features.dim() != 2 or features.dtype != F32:
            raise ValueError(f"features must be a float32 [P, d] tensor, not {features.dtype} {tuple(features.shape)}")
        dev = features.device
        n, d = features.shape
        self.d = d
        image = torch.zeros(n, dtype=torch.long, device=dev) if image is None else image.to(dev, torch.long)
        d1 = d + 1
        inv = _f32(1.0 / d1)  # 1.0f / (d+1)

        # elevate: y = E f (p.5 of Adams et al.), sm running sum of the scaled features
        sf = _scale_factors(d)
        elev = torch.empty(n, d1, dtype=F32, device=dev)
        sm = torch.zeros(n, dtype=F32, device=dev)
        for j in range(d, 0, -1):
            cf = features[:, j - 1] * sf[j - 1]
            elev[:, j] = sm - j * cf
            sm = sm + cf
        elev[:, 0] = sm

        # the closest remainder-0 point: round (to nearest even, as SSE's cvtps2dq) each coordinate
        v = torch.round(elev * inv)
        rem0 = v * d1
        total = v.sum(1, keepdim=True).long()  # small integers: exact in any order
        # ranks of the residuals: coordinate k counts the j > k with res_k < res_j and the i < k
        # with res_k <= res_i (the C++'s pairwise loop, ties to the earlier coordinate)
        res = elev - rem0
        lt = res[:, :, None] < res[:, None, :]
        le = res[:, :, None] <= res[:, None, :]
        upper = torch.ones(d1, d1, dtype=torch.bool, device=dev).triu(1)
        rank = ((lt & upper).sum(2) + (le & upper.T).sum(2)) + total
        # bring the point back onto the plane (rank in 0..d)
        shift = (rank < 0).long() * d1 - (rank >= d1).long() * d1
        rank = rank + shift
        rem0 = rem0 + shift.to(F32)

        # barycentric weights (p.10): bary[p] = res_(rank d-p) - res_(rank d-p+1), with the wrap
        # bary[0] = res_(rank d) + (1 - res_(rank 0)), res = (elevated - rem0) / (d+1)
        vres = (elev - rem0) * inv
        by_rank = torch.zeros_like(vres).scatter_(1, rank, vres)
        bary = torch.empty_like(vres)
        bary[:, 0] = by_rank[:, d] + (1.0 - by_rank[:, 0])
        bary[:, 1:] = torch.flip(by_rank[:, :d] - by_rank[:, 1:], dims=[1])

        # the simplex's vertices: for remainder r, key_i = rem0_i + r - (d+1) * [rank_i > d - r];
        # as integers q_i = key_i div (d+1) for the first d coordinates (the last is implied)
        q0 = torch.div(rem0[:, :d].long(), d1, rounding_mode="floor")  # [n, d]
        r_idx = torch.arange(d1, device=dev)
        above = rank[:, None, :d] > (d - r_idx)[None, :, None]  # [n, r, i]
        q = q0[:, None, :] - above.long()  # [n, d+1 (r), d]
        # one int64 code per vertex: image, remainder, and each coordinate shifted into 1..span-2 so
        # that a neighbour (coordinates +-1) stays inside 0..span-1 and codes never alias
        qmin = q0.min(0).values - 1
        span = q0.max(0).values - qmin + 3
        strides = [1] * d
        for i in range(d - 2, -1, -1):
            strides[i] = strides[i + 1] * int(span[i + 1])
        s_r = strides[0] * int(span[0])
        s_img = s_r * d1
        n_img = int(image.max()) + 1 if n else 1
        if s_img * n_img >= 2 ** 62:
            raise ValueError(f"lattice too large for int64 vertex codes ({n_img} images, spans {span.tolist()}); "
                             "filter fewer images at once")
        stride_t = torch.tensor(strides, dtype=torch.long, device=dev)
        codes = (image[:, None] * s_img + r_idx[None, :] * s_r
                 + ((q - qmin + 1) * stride_t).sum(2))  # [n, d+1]
        uniq, inverse = torch.unique(codes.reshape(-1), sorted=True, return_inverse=True)
        self.M = int(uniq.numel())
        keep = slice(None) if pad is None else ~pad.to(dev)
        # vertex ids shifted by one: 0 is the absent neighbour, whose value stays 0
        self.offsets = (inverse.view(n, d1) + 1)[keep].contiguous()  # [P, d+1]
        self.weights = bary[keep].contiguous()  # [P, d+1]
        self.n_points = int(self.offsets.shape[0])

        # blur neighbours along direction j: n1 = key - 1 + (d+1) e_j, n2 = key + 1 - (d+1) e_j
        # (e_d touches only the implied last coordinate), in code space
        r_of = torch.div(uniq, s_r, rounding_mode="floor") % d1
        sum_s = sum(strides)
        e = strides + [0]
        base1 = torch.where(r_of >= 1, uniq - s_r, uniq + d * s_r - sum_s)
        base2 = torch.where(r_of <= d - 1, uniq + s_r, uniq - d * s_r + sum_s)
        nb = torch.empty(d1, 2, self.M, dtype=torch.long, device=dev)
        for j in range(d1):
            for k, code in enumerate((base1 + e[j], base2 - e[j])):
                pos = torch.searchsorted(uniq, code).clamp_(max=max(self.M - 1, 0))
                nb[j, k] = torch.where(uniq[pos] == code, pos + 1, 0)
        self.neighbours = nb
        self.alpha = _f32(1.0 / (1.0 + 2.0 ** -d))  # 1.0f / (1 + powf(2, -d))

    def compute(self, x: torch.Tensor, scalar_order: bool = False) -> torch.Tensor:
        """Filter ``x`` [P, K] (float32): splat, blur along j = 0..d, slice.

        ``scalar_order``: the slice's product as the C++'s scalar code does it, (w * v) * alpha,
        which it runs for K <= 2 values per point; else its SSE code's (w * alpha) * v. Pass the
        number of labels' choice when K stacks several label maps."""
        p, k = x.shape
        d1 = self.d + 1
        w = self.weights
        src = (w[:, :, None] * x[:, None, :]).reshape(p * d1, k)
        values = torch.zeros(self.M + 1, k, dtype=F32, device=x.device)
        values.index_add_(0, self.offsets.reshape(-1), src)  # pixel order, as the C++ splat
        new = torch.zeros_like(values)
        for j in range(d1):
            n1, n2 = self.neighbours[j]
            torch.add(values[1:], values.index_select(0, n1).add_(values.index_select(0, n2)).mul_(0.5), out=new[1:])
            values, new = new, values
        out = None
        for j in range(d1):
            g = values.index_select(0, self.offsets[:, j])
            t = (w[:, j:j + 1] * g).mul_(self.alpha) if scalar_order else g.mul_(w[:, j:j + 1] * self.alpha)
            out = t if out is None else out.add_(t)
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
_EXP = {k: _f32(v) for k, v in dict(
    hi=88.3762626647950, lo=-88.3762626647949, log2e=1.44269504088896341, c1=0.693359375, c2=-2.12194440e-4,
    p0=1.9875691500e-4, p1=1.3981999507e-3, p2=8.3334519073e-3, p3=4.1665795894e-2, p4=1.6666665459e-1,
    p5=5.0000001201e-1).items()}


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
_ROUND_SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds a double to an integer (ties to even)
# the cubic of glibc's expf (sysdeps/ieee754/flt-32, 2^(r/32) ~ 1 + a1 r + a2 r^2 + a3 r^3 for
# |r| <= 1/2): coefficients of its minimax fit, the only numbers here not derived from their definition
_EXPF_A = [float.fromhex(h) / 32.0 ** k for h, k in
           (("0x1.62e42ff0c52d6p-1", 1), ("0x1.ebfce50fac4f3p-3", 2), ("0x1.c6af84b912394p-5", 3))]
_tab_cache: dict = {}


def _libm_expf(x: torch.Tensor) -> torch.Tensor:
    """expf as glibc >= 2.28 computes it (what Eigen's scalar path calls): in double,
    x / ln2 * 32 = k + r (k the nearest integer, |r| <= 1/2), exp(x) = 2^(k/32) * 2^(r/32) with
    2^(k/32) from a 32-entry table and an exponent shift, 2^(r/32) by a cubic, then rounded to
    float. glibc picks an FMA build on CPUs with FMA; the unfused products here change the double
    result by about 2^-52 relative, which moves its float rounding only in about one evaluation in
    2^28. For x <= -103.97 the result is 0 (glibc's underflow); x here is never positive."""
    key = x.device
    tab = _tab_cache.get(key)
    if tab is None:
        tab = _tab_cache[key] = torch.tensor(_EXP2_TAB, dtype=torch.int64, device=x.device)
    z = x.double() * _INV_LN2_32
    kd = (z + _ROUND_SHIFT) - _ROUND_SHIFT
    r = z - kd
    k = kd.long()
    s = (tab[torch.remainder(k, 32)] + k * (1 << 47)).view(torch.float64)
    a1, a2, a3 = _EXPF_A
    y = (a3 * r + a2) * (r * r) + (a1 * r + 1.0)
    y = (y * s).to(F32)
    return torch.where(x < float.fromhex("-0x1.9fe368p6"), torch.zeros_like(y), y)


def _softmax_eigen(t: torch.Tensor) -> torch.Tensor:
    """expAndNormalize over the last dimension (the labels) in Eigen's order: subtract the max,
    exp (packets of 4 labels by :func:`_packet_exp`, the rest by expf), sum (packets added in
    Eigen's two-accumulator order, then horizontally, then the rest in order), divide."""
    c = t.shape[-1]
    b = t - t.max(-1, keepdim=True).values
    nv = (c // 4) * 4
    e = torch.empty_like(b)
    if nv:
        e[..., :nv] = _packet_exp(b[..., :nv])
    if nv < c:
        e[..., nv:] = _libm_expf(b[..., nv:])
    if nv == 0:
        s = e[..., 0]
        for k in range(1, c):
            s = s + e[..., k]
    else:
        packets = [e[..., i:i + 4] for i in range(0, nv, 4)]
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
        s = (acc[..., 0] + acc[..., 2]) + (acc[..., 1] + acc[..., 3])
        for k in range(nv, c):
            s = s + e[..., k]
    return e / s[..., None]


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
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels, device=device).long()
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
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)
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
        ones = torch.ones(lat.n_points, 1, dtype=F32, device=self.device)
        raw = lat.compute(ones, scalar_order=True)[:, 0]
        norm = (1.0 / torch.sqrt(raw.double() + 1e-20)).to(F32)  # in double, stored as float
        return _Kernel(lat, norm, -_f32(compat))

    def inference(self, unary: torch.Tensor, iters: int | None = None, exact: bool = True) -> torch.Tensor:
        """Mean field from ``unary`` [P, L, C] (float32; P = all images' pixels in order, L
        independent label maps, C labels): returns Q [P, L, C]. ``exact``: the softmax in
        Eigen's order (:func:`_softmax_eigen`), else torch.softmax."""
        iters = self.p.iters if iters is None else iters
        n = sum(self.counts)
        if unary.dim() != 3 or unary.shape[0] != n:
            raise ValueError(f"unary must be [{n}, L, C], not {tuple(unary.shape)}")
        softmax = _softmax_eigen if exact else (lambda t: torch.softmax(t, -1))
        neg = -unary.to(self.device, F32)
        _, nl, c = neg.shape
        q = softmax(neg)
        for _ in range(iters):
            tmp = neg
            for k in self.kernels:
                nq = (q * k.norm[:, None, None]).reshape(n, nl * c)
                f = k.lattice.compute(nq, scalar_order=c <= 2).view(n, nl, c) * k.norm[:, None, None]
                tmp = tmp - k.neg_compat * f
            q = softmax(tmp)
        return q

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-image views of a [P, ...] tensor, each reshaped to [H, W, ...]."""
        return [t.view(h, w, *x.shape[1:]) for t, (h, w) in zip(torch.split(x, self.counts), self.sizes)]


# --------------------------------------------------------------------------
# The two CRFs of wsss.pseudo.crf
# --------------------------------------------------------------------------
def crf_labels_batch(images, label_maps, n_labels: int | Sequence[int], p: CRFConfig, device=None,
                     exact: bool = True) -> list[list[np.ndarray]]:
    """The label CRF for a batch: ``images[b]`` (uint8 HxWx3) with its list ``label_maps[b]``
    (values 0..n_labels[b]-1, each HxW); returns the argmax maps (int64 numpy) per image, as
    :func:`wsss.pseudo.crf.crf_labels` would. The lattices are built once per image; images with
    the same number of labels and of label maps run in one batch."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        images = list(images)
    if len(label_maps) != len(images):
        raise ValueError(f"{len(images)} images but {len(label_maps)} lists of label maps")
    ns = [int(n_labels)] * len(images) if isinstance(n_labels, (int, np.integer)) else [int(n) for n in n_labels]
    if len(ns) != len(images):
        raise ValueError(f"{len(images)} images but {len(ns)} n_labels")
    out: list[list[np.ndarray] | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for b, maps in enumerate(label_maps):
        groups.setdefault((ns[b], len(maps)), []).append(b)
    for (c, nl), idx in groups.items():
        if nl == 0:
            for b in idx:
                out[b] = []
            continue
        crf = TorchDenseCRF([images[b] for b in idx], p, device)
        unaries = []
        for b, (h, w) in zip(idx, crf.sizes):
            maps = []
            for lab in label_maps[b]:
                lab = torch.as_tensor(np.asarray(lab) if not torch.is_tensor(lab) else lab)
                if tuple(lab.shape) != (h, w):
                    raise ValueError(f"label map of shape {tuple(lab.shape)} for an image of {h}x{w}")
                maps.append(unary_from_labels_torch(lab, c, p.gt_prob, crf.device).reshape(c, h * w))
            unaries.append(torch.stack(maps, 0).permute(2, 0, 1))  # [hw, L, C]
        q = crf.inference(torch.cat(unaries), exact=exact)
        for b, qb in zip(idx, crf.split(q)):
            am = qb.argmax(-1).cpu().numpy()  # first maximum, as np.argmax
            out[b] = [am[:, :, l] for l in range(nl)]
    return out  # type: ignore[return-value]


def crf_labels_torch(img, label_maps: list, n_labels: int, p: CRFConfig, device=None,
                     exact: bool = True) -> list[np.ndarray]:
    """Drop-in for :func:`wsss.pseudo.crf.crf_labels` (``shared=True``): one image, its label maps."""
    return crf_labels_batch([img], [list(label_maps)], n_labels, p, device, exact)[0]


def crf_probabilities_batch(images, probs, p: CRFConfig, device=None, exact: bool = True,
                            as_numpy: bool = True) -> list:
    """The probability CRF (DeepLab's post-processing) for a batch: unary -log(clip(probs)) per
    image (probs [C, H, W], same C for all); returns the refined probabilities [C, H, W] per image."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        images = list(images)
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
        c0 = pr.shape[0]
        u = unary_from_softmax_torch(pr if torch.is_tensor(pr) else np.asarray(pr, np.float32), device=crf.device)
        unaries.append(u.reshape(c0, h * w).T[:, None, :])
    q = crf.inference(torch.cat(unaries), exact=exact)
    res = [qb[:, :, 0, :].permute(2, 0, 1) for qb in crf.split(q)]
    return [r.cpu().numpy() for r in res] if as_numpy else res


def crf_probabilities_torch(img, probs, p: CRFConfig, device=None, exact: bool = True) -> np.ndarray:
    """Drop-in for :func:`wsss.pseudo.crf.crf_probabilities`: one image, probs [C, H, W]."""
    return crf_probabilities_batch([img], [probs], p, device, exact)[0]
