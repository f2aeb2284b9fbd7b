"""Joint image + mask transforms of the reference recipes (IRN/GSLM CAM training, DeepLab).

Order follows IRN: random long-side resize, random rescale, flip, colour jitter,
normalise, random crop (image padded with 0 after normalisation, i.e. the mean
colour; mask padded with 255). Every random choice comes from the ``rng`` the
caller passes, so a sample's augmentation depends only on (seed, epoch, index).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.config import AugConfig

_PIL_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_image(img: np.ndarray, size_hw: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    h, w = size_hw
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), _PIL_INTERP[interpolation]))


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    if mask.shape[:2] == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, int(np.round(h * scale))), max(1, int(np.round(w * scale)))


def normalize(img: np.ndarray, mean, std) -> np.ndarray:
    out = img.astype(np.float32) / 255.0
    out -= np.asarray(mean, dtype=np.float32)
    out /= np.asarray(std, dtype=np.float32)
    return out


def color_jitter(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s]."""
    x = img.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * s + gray
    return np.clip(x, 0, 255).astype(np.uint8)


def random_crop(img: np.ndarray, mask: np.ndarray | None, size: int, rng: np.random.Generator):
    """IRN-style crop: each side smaller than ``size`` is placed at a random offset in a padded canvas."""
    h, w = img.shape[:2]
    ch, cw = size, size
    if h >= ch:
        top_src, top_dst, hh = int(rng.integers(0, h - ch + 1)), 0, ch
    else:
        top_src, top_dst, hh = 0, int(rng.integers(0, ch - h + 1)), h
    if w >= cw:
        left_src, left_dst, ww = int(rng.integers(0, w - cw + 1)), 0, cw
    else:
        left_src, left_dst, ww = 0, int(rng.integers(0, cw - w + 1)), w
    out = np.zeros((ch, cw) + img.shape[2:], dtype=img.dtype)
    out[top_dst:top_dst + hh, left_dst:left_dst + ww] = img[top_src:top_src + hh, left_src:left_src + ww]
    out_mask = None
    if mask is not None:
        out_mask = np.full((ch, cw), 255, dtype=mask.dtype)
        out_mask[top_dst:top_dst + hh, left_dst:left_dst + ww] = mask[top_src:top_src + hh, left_src:left_src + ww]
    return out, out_mask


class TrainTransform:
    """Random augmentation of an RGB uint8 image and (optionally) its label mask."""

    def __init__(self, aug: AugConfig):
        self.aug = aug

    def __call__(self, img: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        a = self.aug
        h, w = img.shape[:2]
        if a.resize_long:
            lo, hi = a.resize_long
            target = int(rng.integers(lo, hi + 1))
            scale = target / max(h, w)
            size = scaled_size(h, w, scale)
            img = resize_image(img, size, a.interpolation)
            mask = resize_mask(mask, size) if mask is not None else None
        if a.scale_range:
            lo, hi = a.scale_range
            scale = float(rng.uniform(lo, hi))
            size = scaled_size(img.shape[0], img.shape[1], scale)
            img = resize_image(img, size, a.interpolation)
            mask = resize_mask(mask, size) if mask is not None else None
        if a.hflip and rng.random() < 0.5:
            img = img[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None
        if a.color_jitter > 0:
            img = color_jitter(img, a.color_jitter, rng)
        img = normalize(img, a.mean, a.std)
        if a.crop_size > 0:
            img, mask = random_crop(img, mask, a.crop_size, rng)
        img_t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        mask_t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)) if mask is not None else None
        return img_t, mask_t


def multiscale_inputs(img: np.ndarray, scales, mean, std, mode: str = "bicubic") -> list[torch.Tensor]:
    """The normalised image [3, h, w] at each scale (make_cam, eval_seg).

    ``bicubic`` (the default; what IRN's and GSLM's make_cam write their CAM files
    with): resize the uint8 image with PIL to ``round(side * s)``, then normalise.
    ``nearest``: resize the normalised full-size tensor (GSLM's per-round
    evaluation path); its size is ``floor(side * s)`` because the reference calls
    ``interpolate(scale_factor=s, recompute_scale_factor=True)``.
    ``bilinear``: resize the normalised tensor to ``round(side * s)`` (DeepLab's
    multi-scale inference).
    """
    h, w = img.shape[:2]
    base = torch.from_numpy(np.ascontiguousarray(normalize(img, mean, std).transpose(2, 0, 1)))
    out = []
    for s in scales:
        if mode == "nearest":
            out.append(base if s == 1.0 else
                       F.interpolate(base[None], scale_factor=s, mode="nearest", recompute_scale_factor=True)[0])
            continue
        size = scaled_size(h, w, s)
        if size == (h, w):
            out.append(base)
        elif mode == "bicubic":
            im = resize_image(img, size, "bicubic")
            out.append(torch.from_numpy(np.ascontiguousarray(normalize(im, mean, std).transpose(2, 0, 1))))
        else:
            out.append(F.interpolate(base[None], size=size, mode=mode, align_corners=False)[0])
    return out
