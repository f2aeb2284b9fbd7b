"""Pictures: palette colouring, CAM overlays, and side-by-side panels of a work_dir's ids
(image | CAM overlay per class | pseudo mask | GT) under <work_dir>/vis."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss import layout
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.voc import VOCLayout
from wsss.fileio import read_image, read_mask, voc_palette, write_image

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


def write_panels(cfg, n: int | None = None, ids: list[str] | None = None, out_dir: str | Path | None = None) -> list[str]:
    voc = VOCLayout(cfg.data.root)
    split = cfg.pseudo.eval_split or cfg.cam.split
    if ids is None:
        ids = voc.read_split(split)[: (n if n is not None else cfg.pipeline.visualize_ids)]
    out_dir = Path(out_dir or layout.vis_dir(cfg))
    written = []
    for image_id in ids:
        img = read_image(voc.image(image_id))
        cp = cam_path(cfg.cam.out_dir, image_id)
        cams = load_cam(cp, img.shape[:2])["high_res"] if cp.is_file() else None
        pp = Path(cfg.pseudo.out_dir) / f"{image_id}.png"
        pseudo = read_mask(pp) if pp.is_file() else None
        gp = voc.mask(image_id, cfg.data.gt_dir)
        gt = read_mask(gp) if gp.is_file() else None
        path = out_dir / f"{image_id}.png"
        save_panel(path, img=img, cams=cams, pseudo=pseudo, gt=gt)
        written.append(str(path))
    return written
