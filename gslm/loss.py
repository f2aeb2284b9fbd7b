"""Seed Reactivation (SR) loss of GSLM's Specific Learning Module.

Per image, summed over images (not averaged):

* take the CAM at feature resolution: the ReLU'd classifier output, all K classes;
* divide each class map by its spatial max + 1e-5 and multiply by the boundary
  ``beta`` (6);
* downsample the pseudo mask to the CAM size (nearest);
* over the pixels whose mask is not 255, for each ground-truth class c:
  ``smooth_l1(beta * norm_cam_c, beta * [mask == c + 1])`` (mean over those
  pixels), summed over the classes;
* an image with no valid pixel contributes nothing.

Confident foreground is pulled up to the boundary, confident background and
other classes down to 0; the uncertain band (255) is free to grow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest downsampling of an integer mask [B, H, W] to ``size``."""
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0].long()


def seed_reactivation_loss(cam: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    """``cam``: raw classifier output [B, K, h, w]; ``mask``: pseudo mask [B, H, W] (0 bg,
    c+1 class c, 255 ignore); ``labels``: multi-hot [B, K]. Returns a scalar.

    Vectorised over images and classes (no host synchronisation); equal to the
    per-image, per-class loop of the definition above.
    """
    b, k, h, w = cam.shape
    cam = F.relu(cam.float())
    norm = cam / (F.adaptive_max_pool2d(cam, (1, 1)) + 1e-5)
    target_mask = downsample_mask(mask, (h, w))
    valid = (target_mask != 255).float()  # [B, h, w]
    classes = torch.arange(1, k + 1, device=cam.device).view(1, k, 1, 1)
    target = (target_mask[:, None] == classes).float()  # [B, K, h, w]
    per_pixel = F.smooth_l1_loss(beta * norm, beta * target, reduction="none") * valid[:, None]
    n_valid = valid.sum(dim=(1, 2)).clamp(min=1.0)  # an all-ignore image sums to 0 anyway
    per_class = per_pixel.sum(dim=(2, 3)) / n_valid[:, None]  # mean over the valid pixels
    return (per_class * (labels > 0).float()).sum()
