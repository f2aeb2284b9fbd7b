"""Multi-scale + flip CAM inference.

For each scale the image and its horizontal flip run as one batch; the flipped
map is flipped back and added; every map is upsampled (bilinear,
align_corners=False) to the image size and summed over scales. Each kept class
map is then divided by its spatial max + 1e-5.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def strided_size(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)


@torch.no_grad()
def multiscale_cam(model: torch.nn.Module, inputs: list[torch.Tensor], out_size: tuple[int, int], flip: bool = True,
                   strided_stride: int = 0, autocast=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum of ReLU CAMs over scales (and flips), upsampled.

    ``inputs``: one [B, 3, h_s, w_s] tensor per scale (a batch of equal-sized
    images). Returns (high_res [B, K, H, W], strided [B, K, ceil(H/s), ceil(W/s)] or None),
    not yet normalised.
    """
    high, strided = None, None
    s_size = strided_size(out_size, strided_stride) if strided_stride else None
    for x in inputs:
        b = x.shape[0]
        batch = torch.cat([x, x.flip(-1)], 0) if flip else x
        if autocast is not None:
            with autocast():
                cam = model.forward_cam(batch)
        else:
            cam = model.forward_cam(batch)
        cam = cam.float()
        if flip:
            cam = cam[:b] + cam[b:].flip(-1)
        up = F.interpolate(cam, size=out_size, mode="bilinear", align_corners=False)
        high = up if high is None else high + up
        if s_size is not None:
            st = F.interpolate(cam, size=s_size, mode="bilinear", align_corners=False)
            strided = st if strided is None else strided + st
    return high, strided


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map [k, H, W] by its spatial max + 1e-5."""
    if cams.shape[0] == 0:
        return cams
    return cams / (F.adaptive_max_pool2d(cams, (1, 1)) + 1e-5)
