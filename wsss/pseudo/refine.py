"""CAMs -> label maps: a background plane at a threshold, argmax, the label CRF; and the
pseudo mask with its uncertain band (255).

As IRN/GSLM: a background plane at ``fg_thres`` gives the fg map and one at ``bg_thres``
the bg map (argmax over [plane, CAMs]); each is refined by the label CRF. Foreground comes
from the fg map; a pixel the fg map calls background but the bg map calls foreground is
uncertain (255).
"""
from __future__ import annotations

import numpy as np

from wsss.config import CRFConfig
from wsss.pseudo.crf import backend, crf_labels


def threshold_labels(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Index map 0..k over [background plane, k CAMs] (0 = background)."""
    k, h, w = cams.shape
    planes = np.concatenate([np.full((1, h, w), threshold, np.float32), cams.astype(np.float32)], 0)
    return np.argmax(planes, 0)


def refined_labels(img: np.ndarray, cams: np.ndarray, keys: np.ndarray, thresholds: list[float],
                   crf: CRFConfig | None, shared_pairwise: bool = True, device=None) -> list[np.ndarray]:
    """One label map (0 background, c+1 class c) per background threshold: argmax over
    [a plane at the threshold, the kept CAMs], then the label CRF (when ``crf`` is given).
    The reference's "CRF refiner" of its per-round evaluation is this at one threshold."""
    lut = np.concatenate([[0], np.asarray(keys, np.int64) + 1])
    idx = [threshold_labels(cams, t) for t in thresholds]
    if crf is not None and len(keys) > 0:
        idx = crf_labels(img, idx, len(keys) + 1, crf, shared=shared_pairwise, device=device)
    return [lut[i] for i in idx]


def cams_to_pseudo(img: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_thres: float, bg_thres: float,
                   crf: CRFConfig | None, shared_pairwise: bool = True, device=None) -> np.ndarray:
    """The pseudo mask (uint8: 0 background, c+1 class c, 255 uncertain) of one image."""
    fg, bg = refined_labels(img, cams, keys, [fg_thres, bg_thres], crf, shared_pairwise, device)
    return combine_fg_bg(fg, bg)


def combine_fg_bg(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """The pseudo mask from the refined fg and bg label maps: the fg map's label; 255 where
    the fg map says background but the bg map does not; background where both do."""
    mask = fg.copy()
    mask[fg == 0] = 255
    mask[(fg == 0) & (bg == 0)] = 0
    return mask.astype(np.uint8)


def crf_device(cfg, crf: CRFConfig | None) -> tuple[object | None, bool]:
    """(the device the label CRF runs on, whether it runs in this process): the torch backend
    on CUDA runs here (a forked worker cannot use CUDA), everything else in the worker pool."""
    if crf is None:
        return None, False
    from wsss.engine.distributed import select_device

    device = select_device(cfg.runtime.device)
    on_gpu = backend(crf, device) == "torch" and device.type == "cuda"
    return (device if on_gpu else None), on_gpu
