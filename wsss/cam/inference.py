"""Multi-scale + flip CAM inference.

For each scale the image and its horizontal flip run as one batch (or, with
``flip_apart``, one after the other); the flipped map is flipped back and added;
every map is upsampled (bilinear, align_corners=False) to the image size and
summed over scales. Each kept class map is then divided by its spatial max + 1e-5.
"""
from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F


def strided_size(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)


@torch.no_grad()
def multiscale_cam(model: torch.nn.Module, inputs: list[torch.Tensor], out_size: tuple[int, int], flip: bool = True,
                   strided_stride: int = 0, autocast=None, keys: list[torch.Tensor] | None = None,
                   flip_apart: bool = False, largest_first: bool = False):
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

    Two switches change what is held in memory at once, not the values (bit for bit, the
    sum is always taken over the scales in their given order):

    * ``flip_apart``: the flipped images are a forward pass of their own instead of one
      batch with the originals (half the activations held at once);
    * ``largest_first``: the scales run from the largest input down, so each smaller
      scale's activations fit in memory the larger one has just freed.
    """
    s_size = strided_size(out_size, strided_stride) if strided_stride else None
    order = sorted(range(len(inputs)), key=lambda i: -inputs[i].shape[-1] * inputs[i].shape[-2]) if largest_first \
        else range(len(inputs))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if autocast is not None:
            with autocast():
                return model.forward_cam(batch).float()
        return model.forward_cam(batch).float()

    parts: dict[int, tuple] = {}  # scale index -> (high, strided) of that scale
    for i in order:
        x = inputs[i]
        b = x.shape[0]
        if flip and flip_apart:
            cam = torch.cat([forward(x), forward(x.flip(-1))], 0)
        else:
            cam = forward(torch.cat([x, x.flip(-1)], 0) if flip else x)
        if keys is None:
            if flip:
                cam = cam[:b] + cam[b:].flip(-1)
            parts[i] = (F.interpolate(cam, size=out_size, mode="bilinear", align_corners=False),
                        F.interpolate(cam, size=s_size, mode="bilinear", align_corners=False) if s_size is not None else None)
            continue
        high, strided = [], []
        for n, k in enumerate(keys):
            if k.numel() == 0:  # an image without classes: empty maps (interpolate refuses 0 channels)
                high.append(cam.new_zeros((0, *out_size)))
                strided.append(cam.new_zeros((0, *s_size)) if s_size is not None else None)
                continue
            c = cam[n, k] + cam[b + n, k].flip(-1) if flip else cam[n, k]
            # upsampled in the standard layout whatever the network's memory format
            c = c.contiguous()[None]
            high.append(F.interpolate(c, size=out_size, mode="bilinear", align_corners=False)[0])
            strided.append(F.interpolate(c, size=s_size, mode="bilinear", align_corners=False)[0] if s_size is not None else None)
        parts[i] = (high, strided)
        del cam

    def total(terms: list):  # ((t0 + t1) + t2) + ...: the scales in their given order
        return None if terms[0] is None else functools.reduce(operator.add, terms)

    per_scale = [parts[i] for i in range(len(inputs))]
    if keys is None:
        return total([p[0] for p in per_scale]), total([p[1] for p in per_scale])
    high = [total([p[0][n] for p in per_scale]) for n in range(len(keys))]
    strided = [total([p[1][n] for p in per_scale]) for n in range(len(keys))]
    return high, strided if s_size is not None else None


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map [k, H, W] by its spatial max + 1e-5."""
    if cams.shape[0] == 0:
        return cams
    return cams / (F.adaptive_max_pool2d(cams, (1, 1)) + 1e-5)
