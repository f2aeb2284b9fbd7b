"""IRN's random walk over the boundary map (make_sem_seg_labels), dense and sparse.

Over the pixels of the stride-4 map (N = h * w), the affinity matrix A has
``A[p, q] = A[q, p] = 1 - max(B on the path p -> q)`` for every pair of a half disk of
radius r (both ends inside the map), ``A[p, p] = 1``, and 0 elsewhere. The transition
matrix is ``T = A**beta / colsum(A**beta)``: every *column* sums to 1. The walk
multiplies the row vector of each class's start map, ``cam * (1 - B)``, by T, 2**exp_times
times: ``rw = x @ T**(2**exp_times)``. So one step replaces each pixel j with the
average of the pixels around it, weighted by ``A[i, j]**beta``:

    x'[j] = sum_i x[i] * A[i, j]**beta / sum_i A[i, j]**beta

* :func:`dense_random_walk`: the reference's procedure, written out: the dense N x N
  matrix squared ``exp_times`` times (memory N^2, time N^3: 0.55 GB and minutes on a
  CPU at VOC's 500 x 375).
* :func:`sparse_random_walk`: the same product as ``2**exp_times`` steps of the
  stencil above over the fixed neighbourhood (the 2 * |half disk| + 1 offsets): memory
  and time per step linear in N, no N x N matrix. Equal to the dense walk up to
  float rounding (tests/test_irn.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.irn.indexing import PairIndex, pair_index


def neighbour_affinity(boundary: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """Affinity maps [n_offsets, h, w] of a boundary map [h, w]: entry (k, p) is the pair
    (p, p + offsets[k]); 0 where p + offsets[k] lies outside the map.

    As the reference, the map is padded with boundary 1 (left, right and bottom by r),
    so a pair that leaves the map has a path through a 1 and affinity 0.
    """
    r = index.radius
    h, w = boundary.shape
    padded = F.pad(boundary[None, None], (r, r, 0, r), mode="constant", value=1.0)[0, 0]
    out = []
    for path in index.paths:
        along = torch.stack([padded[y:y + h, r + x:r + x + w] for y, x in path])
        out.append(1 - along.amax(0))
    return torch.stack(out)


def _inside(h: int, w: int, dy: int, dx: int, device) -> torch.Tensor:
    """[h, w] bool: p + (dy, dx) lies inside the map."""
    rows = torch.arange(h, device=device)[:, None] + dy
    cols = torch.arange(w, device=device)[None, :] + dx
    return (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)


def dense_affinity(boundary: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """The symmetric affinity matrix [N, N] with ones on the diagonal."""
    index = pair_index(radius)
    h, w = boundary.shape
    n = h * w
    aff = neighbour_affinity(boundary, index)
    flat = torch.arange(n, device=boundary.device).view(h, w)
    dense = torch.eye(n, dtype=boundary.dtype, device=boundary.device)
    for k, (dy, dx) in enumerate(index.offsets):
        inside = _inside(h, w, dy, dx, boundary.device)
        src = flat[inside]
        dst = src + dy * w + dx
        dense[src, dst] = aff[k][inside]
        dense[dst, src] = aff[k][inside]
    return dense


def dense_transition(boundary: torch.Tensor, beta: float = 10, radius: int = 5) -> torch.Tensor:
    """T = A**beta divided by its column sums."""
    scaled = torch.pow(dense_affinity(boundary, radius), beta)
    return scaled / torch.sum(scaled, dim=0, keepdim=True)


def dense_random_walk(cams: torch.Tensor, boundary: torch.Tensor, beta: float = 10, exp_times: int = 8,
                      radius: int = 5) -> torch.Tensor:
    """The reference's walk: T squared ``exp_times`` times, then ``(cams * (1 - B)) @ T``.
    ``cams`` [k, h, w] at the boundary map's size; returns [k, h, w]."""
    k, h, w = cams.shape
    trans = dense_transition(boundary, beta, radius)
    for _ in range(exp_times):
        trans = torch.matmul(trans, trans)
    x = (cams * (1 - boundary)).reshape(k, h * w)
    return torch.matmul(x, trans).view(k, h, w)


class Stencil:
    """The transition matrix as a stencil over the 2 * |half disk| + 1 offsets o (0, each
    d and each -d): ``weights[o, j] = A[j + o, j]**beta / sum_i A[i, j]**beta`` (0 where
    j + o lies outside), so that ``(x @ T)[j] = sum_o weights[o, j] * x[j + o]``."""

    def __init__(self, boundary: torch.Tensor, beta: float = 10, radius: int = 5):
        index = pair_index(radius)
        h, w = boundary.shape
        self.radius, self.h, self.w = radius, h, w
        # [K, h, w]: the pair (p, p + d) stored at p; 0 for pairs that leave the map
        powered = torch.pow(neighbour_affinity(boundary, index), beta)
        offsets, planes = [(0, 0)], [torch.ones_like(boundary)]
        for k, (dy, dx) in enumerate(index.offsets):
            offsets.append((dy, dx))
            planes.append(powered[k])
            # the pair (j - d, j), stored at j - d, moved to j
            back = torch.zeros_like(powered[k])
            back[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                powered[k][max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            offsets.append((-dy, -dx))
            planes.append(back)
        weights = torch.stack(planes)
        self.offsets = offsets
        self.weights = weights / weights.sum(0, keepdim=True)

    def step(self, x: torch.Tensor, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """One transition of maps x [k, h, w] (row vectors x @ T, as maps)."""
        r, h, w = self.radius, self.h, self.w
        if buffer is None:
            buffer = x.new_zeros(x.shape[0], h + 2 * r, w + 2 * r)
        buffer[:, r:r + h, r:r + w] = x
        out = torch.zeros_like(x)
        for weight, (dy, dx) in zip(self.weights, self.offsets):
            out.addcmul_(weight, buffer[:, r + dy:r + dy + h, r + dx:r + dx + w])
        return out


def sparse_random_walk(cams: torch.Tensor, boundary: torch.Tensor, beta: float = 10, exp_times: int = 8,
                       radius: int = 5, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """The reference's walk as ``2**exp_times`` stencil steps; [k, h, w] -> [k, h, w].

    ``dtype``: the arithmetic (default float64; None: the inputs'). The reference squares
    a float32 matrix; 256 float32 steps carry about twice its rounding (1e-4 of the
    maximum against its 3e-5 on 40 x 50 maps), float64 steps none that matters, so in
    float64 the difference to the reference is the reference's own rounding.
    """
    out_dtype = cams.dtype
    if dtype is not None:
        cams, boundary = cams.to(dtype), boundary.to(dtype)
    stencil = Stencil(boundary, beta, radius)
    x = cams * (1 - boundary)
    buffer = x.new_zeros(x.shape[0], x.shape[1] + 2 * radius, x.shape[2] + 2 * radius)
    for _ in range(2 ** exp_times):
        x = stencil.step(x, buffer)
    return x.to(out_dtype)
