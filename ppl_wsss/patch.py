"""The patch operation P and its inverse, the merge operation M (PPL, Fig. 2 and 5).

P cuts the feature map after a split point into a g x g grid of patches folded into
the batch: [g*g*B, C, ph, pw], patch-major (row by row over the grid), so one batched
call runs every patch on its own through the blocks after the split. M puts the
blocks' outputs back together into one map of exactly the full path's size.

The cut is laid out in units of the full path's *output cells* (the cells the blocks
after the split produce, r = their total stride). Along each axis (size w, n =
ceil(w / r) output cells, full-path cell J centred on split cell r*J):

* every patch is a miniature of the whole map: it starts on an output-cell centre
  (a multiple of r) and is r*(q-1) + t split cells long, t = w - r*(n-1) being how far
  the whole map reaches past its last centre. So a patch yields exactly q output cells,
  centred on the same split cells as the full path's: merge never resizes, and merged
  cell J is full-path cell J (alignment, for every size);
* the patches sit mirror-symmetrically on the map, padded by the same whole number of
  output cells (L, r*L split cells) on both sides. So the patches of a flipped map are
  exactly the flipped patches of the map, in mirrored grid order, for every size;
* consecutive patches either abut in output cells (they then leave r - t split cells
  between them to no patch) or share one output cell (they then overlap by t split
  cells); M averages the two values of a shared cell. Which one the parity of n and g
  dictates (an even grid on an odd number of cells must share its middle cell); among
  the layouts allowed, the one with the least padding, then without sharing.

With r = 1 (a map merged without going through strided blocks), t = 1: the patches
tile the map with no gap, and merge(split(x)) == x. What is exact for which sizes, and
what is not: docs/ppl.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD_MODES = ("zeros", "replicate", "reflect")


@dataclass(frozen=True)
class AxisLayout:
    """Where the patches sit along one axis; lengths in output cells unless named ``split``."""

    size: int  # w: split cells of the map, before padding
    stride: int  # r: the total stride of the blocks the patches go through
    cells: int  # n = ceil(w / r): the full path's output cells
    per_patch: int  # q: output cells a patch yields
    shared: int  # s: output cells consecutive patches share (0 or 1)
    pad: int  # L: padding on each side

    @property
    def patch_split(self) -> int:
        """A patch's length in split cells: r*(q-1) + t, a miniature of the whole map."""
        tail = self.size - self.stride * (self.cells - 1)
        return self.stride * (self.per_patch - 1) + tail

    @property
    def step_split(self) -> int:
        """Split cells from one patch's start to the next one's."""
        return self.stride * (self.per_patch - self.shared)

    @property
    def span(self) -> int:
        """Output cells the patches cover, padding included: n + 2L."""
        return self.cells + 2 * self.pad

    def starts(self, grid: int) -> list[int]:
        """The output cell each patch starts on (negative: in the padding)."""
        return [i * (self.per_patch - self.shared) - self.pad for i in range(grid)]


def axis_layout(size: int, grid: int, stride: int = 1) -> AxisLayout:
    if size < 1:
        raise ValueError(f"cannot patch an empty map (size {size})")
    n = math.ceil(size / stride)
    best = None
    for s in ((0, 1) if grid > 1 else (0,)):
        # q >= 1 + s: patches that share a cell must still advance by one
        q0 = max(math.ceil((n + (grid - 1) * s) / grid), 1 + s)
        for q in (q0, q0 + 1):
            span = grid * q - (grid - 1) * s
            # symmetric padding needs an even surplus; an even grid never changes the
            # parity, so only one of s = 0, 1 works for it
            if (span - n) % 2 == 0:
                cand = ((span - n) // 2, s, q)
                best = cand if best is None or cand < best else best
                break
    pad, s, q = best
    return AxisLayout(size=size, stride=stride, cells=n, per_patch=q, shared=s, pad=pad)


@dataclass(frozen=True)
class PatchInfo:
    grid: int
    batch: int
    height: int  # split cells, before padding
    width: int
    rows: AxisLayout
    cols: AxisLayout

    @property
    def out_size(self) -> tuple[int, int]:
        """The merged map's size: the full path's, ceil(H / r) x ceil(W / r)."""
        return self.rows.cells, self.cols.cells


def _pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    if not (ph or pw):
        return x
    if mode == "zeros":
        return F.pad(x, (pw, pw, ph, ph))
    if mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        mode = "replicate"  # reflect needs pad < size; tiny maps fall back
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


def split_patches(x: torch.Tensor, grid: int, pad_mode: str = "replicate",
                  stride: int = 1) -> tuple[torch.Tensor, PatchInfo]:
    """P: [B, C, H, W] -> [g*g*B, C, ph, pw] (plus what merge needs to undo it).

    ``stride``: the total stride r of the blocks the patches will go through; each patch
    then yields exactly ``info.rows.per_patch`` x ``info.cols.per_patch`` output cells.
    Padding (``pad_mode``: zeros, replicate, reflect) is r*L split cells on every side.
    """
    if grid < 1:
        raise ValueError(f"patch grid must be >= 1, got {grid}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {pad_mode!r}")
    b, c, h, w = x.shape
    rows, cols = axis_layout(h, grid, stride), axis_layout(w, grid, stride)
    x = _pad(x, rows.pad * stride, cols.pad * stride, pad_mode)
    ph, pw = rows.patch_split, cols.patch_split
    # [B, C, Hp, Wp] -> [B, C, g, g, ph, pw]: windows of ph x pw every step cells (a view)
    windows = x.unfold(2, ph, rows.step_split).unfold(3, pw, cols.step_split)
    # -> [g, g, B, C, ph, pw] -> [g*g*B, C, ph, pw]
    patches = windows.permute(2, 3, 0, 1, 4, 5).reshape(grid * grid * b, c, ph, pw)
    return patches, PatchInfo(grid, b, h, w, rows, cols)


def _stitch(x: torch.Tensor, dim: int, axis: AxisLayout) -> torch.Tensor:
    """[..., g, q, ...] (the grid at ``dim``, a patch's cells at ``dim + 1``) -> [..., n + 2L, ...]."""
    if not axis.shared:
        return x.flatten(dim, dim + 1)
    g, q = x.shape[dim], x.shape[dim + 1]
    first, last = x.narrow(dim + 1, 0, 1), x.narrow(dim + 1, q - 1, 1)  # [..., g, 1, ...]
    # patch i's last cell is patch i+1's first: the same full-path cell seen from either side
    shared = (last.narrow(dim, 0, g - 1) + first.narrow(dim, 1, g - 1)) / 2  # [..., g-1, 1, ...]
    heads = torch.cat([first.narrow(dim, 0, 1), shared], dim)  # [..., g, 1, ...]
    body = torch.cat([heads, x.narrow(dim + 1, 1, q - 2)], dim + 1)  # [..., g, q-1, ...]
    tail = last.narrow(dim, g - 1, 1).flatten(dim, dim + 1)  # [..., 1, ...]
    return torch.cat([body.flatten(dim, dim + 1), tail], dim)


def merge_patches(patches: torch.Tensor, info: PatchInfo, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """M: [g*g*B, C', q_h, q_w] -> [B, C', n_h, n_w], the full path's size, cell for cell.

    Never resizes: patch outputs of another size than P promised, or an ``out_size``
    (the full path's size) other than the merged one, mean the blocks' stride is not
    the ``stride`` given to P, and raise.
    """
    g, b = info.grid, info.batch
    n, c, qh, qw = patches.shape
    if n != g * g * b:
        raise ValueError(f"merge expects {g * g * b} patches, got {n}")
    if (qh, qw) != (info.rows.per_patch, info.cols.per_patch):
        raise ValueError(f"patch outputs are {qh}x{qw}, expected {info.rows.per_patch}x{info.cols.per_patch}: "
                         f"the blocks' stride differs from the stride {info.rows.stride} given to split_patches")
    # [g, g, B, C', q_h, q_w] -> [B, C', g, q_h, g, q_w]
    x = patches.reshape(g, g, b, c, qh, qw).permute(2, 3, 0, 4, 1, 5)
    x = _stitch(_stitch(x, 4, info.cols), 2, info.rows)  # [B, C', n_h + 2L_h, n_w + 2L_w]
    r, k = info.rows, info.cols
    x = x[:, :, r.pad:r.pad + r.cells, k.pad:k.pad + k.cells]
    if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
        raise ValueError(f"merged map is {tuple(x.shape[-2:])}, the full path's {tuple(out_size)}: "
                         f"the blocks' stride differs from the stride {r.stride} given to split_patches")
    return x
