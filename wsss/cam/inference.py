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
                   strided_stride: int = 0, autocast=None, keys: list[torch.Tensor] | None = None):
    """Sum of ReLU CAMs over scales (and flips), upsampled.

    ``inputs``: one [B, 3, h_s, w_s] tensor per scale (a batch of equal-sized
    images). Returns (high_res [B, K, H, W], strided [B, K, ceil(H/s), ceil(W/s)] or None),
    not yet normalised.

    ``keys``: per image, the class indices to keep ([k] long tensors). Then only those
    maps are flipped back, upsampled and summed, and the result is one [k, H, W] tensor
    per image (and one strided [k, h, w] each, or None). Bilinear upsampling treats every
    map on its own, so the kept maps are bit for bit those of the full computation; at
    VOC sizes (1.5 of 20 classes per image) this skips most of the upsampling and the
    full-size temporaries.
    """
    s_size = strided_size(out_size, strided_stride) if strided_stride else None
    if keys is None:
        high, strided = None, None
    else:
        high, strided = [None] * len(keys), [None] * len(keys)
    for x in inputs:
        b = x.shape[0]
        batch = torch.cat([x, x.flip(-1)], 0) if flip else x
        if autocast is not None:
            with autocast():
                cam = model.forward_cam(batch)
        else:
            cam = model.forward_cam(batch)
        cam = cam.float()
        if keys is None:
            if flip:
                cam = cam[:b] + cam[b:].flip(-1)
            up = F.interpolate(cam, size=out_size, mode="bilinear", align_corners=False)
            high = up if high is None else high + up
            if s_size is not None:
                st = F.interpolate(cam, size=s_size, mode="bilinear", align_corners=False)
                strided = st if strided is None else strided + st
            continue
        for n, k in enumerate(keys):
            if k.numel() == 0:  # an image without classes: empty maps (interpolate refuses 0 channels)
                high[n] = cam.new_zeros((0, *out_size))
                strided[n] = cam.new_zeros((0, *s_size)) if s_size is not None else None
                continue
            c = cam[n, k] + cam[b + n, k].flip(-1) if flip else cam[n, k]
            # upsampled in the standard layout whatever the network's memory format
            c = c.contiguous()[None]
            up = F.interpolate(c, size=out_size, mode="bilinear", align_corners=False)[0]
            high[n] = up if high[n] is None else high[n] + up
            if s_size is not None:
                st = F.interpolate(c, size=s_size, mode="bilinear", align_corners=False)[0]
                strided[n] = st if strided[n] is None else strided[n] + st
    if keys is not None and s_size is None:
        strided = None
    return high, strided


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map [k, H, W] by its spatial max + 1e-5."""
    if cams.shape[0] == 0:
        return cams
    return cams / (F.adaptive_max_pool2d(cams, (1, 1)) + 1e-5)
