"""Palette colouring, CAM overlays and side-by-side panels (image | CAMs | pseudo mask | GT)."""
from __future__ import annotations

import os

import numpy as np

from wsss.fileio import voc_palette, write_image

_PAL = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """A label mask as RGB with the VOC colour map (255 shows as VOC's cream 'void')."""
    out = _PAL[np.asarray(mask, dtype=np.uint8)]
    out[np.asarray(mask) == 255] = (224, 224, 192)
    return out


def jet(x: np.ndarray) -> np.ndarray:
    """A jet-like colour map for values in [0, 1] (no matplotlib dependency)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0, 1)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def cam_overlay(img: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (img.astype(np.float32) * (1 - alpha) + jet(cam).astype(np.float32) * alpha).astype(np.uint8)


def make_panel(img: np.ndarray, cams: np.ndarray | None = None, pseudo: np.ndarray | None = None,
               gt: np.ndarray | None = None, pred: np.ndarray | None = None) -> np.ndarray:
    """image | one overlay per CAM class | pseudo mask | prediction | GT, left to right."""
    tiles = [img]
    if cams is not None:
        tiles += [cam_overlay(img, c) for c in cams]
    for m in (pseudo, pred, gt):
        if m is not None:
            tiles.append(colorize(m))
    h = img.shape[0]
    sep = np.full((h, 2, 3), 255, np.uint8)
    row = []
    for t in tiles:
        row += [t, sep]
    return np.concatenate(row[:-1], axis=1)


def save_panel(path: str | os.PathLike, **kwargs) -> None:
    write_image(path, make_panel(**kwargs))
