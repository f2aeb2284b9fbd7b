"""The CAM file: one pickle-free ``<id>.npz`` per image.

    keys      int16 [k]          the image's ground-truth class indices (0..K-1)
    high_res  float16/32 [k,H,W] per-class CAM at image size, each divided by its max + 1e-5
    strided   float [k,h,w]      optional stride-4 map (what IRN needs)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.fileio import DataError, load_npz, save_npz


def cam_path(cam_dir: str | os.PathLike, image_id: str) -> Path:
    return Path(cam_dir) / f"{image_id}.npz"


def save_cam(path: str | os.PathLike, keys: np.ndarray, high_res: np.ndarray, strided: np.ndarray | None = None,
             dtype: str = "float32") -> None:
    arrays = {"keys": np.asarray(keys, dtype=np.int16), "high_res": np.asarray(high_res, dtype=dtype)}
    if strided is not None:
        arrays["strided"] = np.asarray(strided, dtype=dtype)
    save_npz(path, **arrays)


def load_cam(path: str | os.PathLike, image_hw: tuple[int, int] | None = None, num_classes: int | None = None) -> dict:
    """Read and check a CAM file: keys present, shapes consistent (and equal to the image size)."""
    d = load_npz(path, required=("keys", "high_res"))
    keys, hr = d["keys"], d["high_res"]
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise DataError(f"{path}: 'keys' must be a 1-D integer array, got {keys.dtype} {keys.shape}")
    if hr.ndim != 3 or hr.shape[0] != keys.shape[0]:
        raise DataError(f"{path}: 'high_res' must be [len(keys)={len(keys)}, H, W], got {hr.shape}")
    if image_hw is not None and tuple(hr.shape[1:]) != tuple(image_hw):
        raise DataError(f"{path}: 'high_res' is {hr.shape[1]}x{hr.shape[2]} but the image is {image_hw[0]}x{image_hw[1]}")
    if num_classes is not None and len(keys) and (keys.min() < 0 or keys.max() >= num_classes):
        raise DataError(f"{path}: 'keys' {keys.tolist()} outside 0..{num_classes - 1}")
    if "strided" in d and (d["strided"].ndim != 3 or d["strided"].shape[0] != keys.shape[0]):
        raise DataError(f"{path}: 'strided' must be [len(keys), h, w], got {d['strided'].shape}")
    d["keys"] = keys.astype(np.int64)
    d["high_res"] = hr.astype(np.float32, copy=False)
    return d
