"""The patch operation P and its inverse, the merge operation M (PPL, Fig. 2 and 5).

P splits a feature map [B, C, H, W] into a g x g grid of non-overlapping
patches folded into the batch: [g*g*B, C, H/g, W/g], patch-major (row by row
over the grid), so one batched call runs every patch on its own. When H or W
is not a multiple of g the map is padded first (mode: zeros, replicate or
reflect) and the merge crops back. M stitches the patches of an output map
back into one map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD_MODES = ("zeros", "replicate", "reflect")


@dataclass(frozen=True)
class PatchInfo:
    grid: int
    batch: int
    height: int  # before padding
    width: int
    pad_h: int
    pad_w: int


def split_patches(x: torch.Tensor, grid: int, pad_mode: str = "replicate") -> tuple[torch.Tensor, PatchInfo]:
    """P: [B, C, H, W] -> [g*g*B, C, ceil(H/g), ceil(W/g)] (plus what merge needs to undo it)."""
    if grid < 1:
        raise ValueError(f"patch grid must be >= 1, got {grid}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {pad_mode!r}")
    b, c, h, w = x.shape
    hp, wp = math.ceil(h / grid) * grid, math.ceil(w / grid) * grid
    pad_h, pad_w = hp - h, wp - w
    if pad_h or pad_w:
        if pad_mode == "zeros":
            x = F.pad(x, (0, pad_w, 0, pad_h))
        else:
            if pad_mode == "reflect" and (pad_h >= h or pad_w >= w):
                pad_mode = "replicate"  # reflect needs pad < size; tiny maps fall back
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=pad_mode)
    ph, pw = hp // grid, wp // grid
    # [B, C, g, ph, g, pw] -> [g, g, B, C, ph, pw]
    patches = x.reshape(b, c, grid, ph, grid, pw).permute(2, 4, 0, 1, 3, 5).reshape(grid * grid * b, c, ph, pw)
    return patches, PatchInfo(grid, b, h, w, pad_h, pad_w)


def merge_patches(patches: torch.Tensor, info: PatchInfo, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """M: [g*g*B, C', h', w'] -> [B, C', g*h', g*w'], cropped to the unpadded extent.

    When the patches went through strided blocks, the crop keeps the share of the
    map that corresponds to the unpadded input; if ``out_size`` (the full path's
    size) still differs by rounding, the map is resized to it (bilinear).
    """
    g, b = info.grid, info.batch
    n, c, ph, pw = patches.shape
    if n != g * g * b:
        raise ValueError(f"merge expects {g * g * b} patches, got {n}")
    x = patches.reshape(g, g, b, c, ph, pw).permute(2, 3, 0, 4, 1, 5).reshape(b, c, g * ph, g * pw)
    if info.pad_h or info.pad_w:
        hm, wm = g * ph, g * pw
        keep_h = math.ceil(hm * info.height / (info.height + info.pad_h))
        keep_w = math.ceil(wm * info.width / (info.width + info.pad_w))
        x = x[:, :, :keep_h, :keep_w]
    if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
    return x
