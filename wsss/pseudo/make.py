"""make_pseudo: CAMs -> fg/bg label maps -> label CRF -> pseudo masks with an uncertain band (255).

As IRN/GSLM: a background plane at ``fg_thres`` gives the fg map and one at
``bg_thres`` the bg map (argmax over [plane, CAMs]); each is refined by the
label CRF. Foreground comes from the fg map; a pixel the fg map calls
background but the bg map calls foreground is uncertain (255).
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from wsss.cam.files import cam_path, load_cam
from wsss.config import Config
from wsss.data.voc import VOCLayout
from wsss.engine.distributed import get_rank, get_world_size
from wsss.fileio import DataError, read_image, read_mask, remove_stale_temps, write_palette_png
from wsss.metrics import confusion_matrix, scores
from wsss.parallel import chunks, imap_unordered
from wsss.config import CRFConfig
from wsss.pseudo.crf import crf_labels


def threshold_labels(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Index map 0..k over [background plane, k CAMs] (0 = background)."""
    k, h, w = cams.shape
    planes = np.concatenate([np.full((1, h, w), threshold, np.float32), cams.astype(np.float32)], 0)
    return np.argmax(planes, 0)


def refined_labels(img: np.ndarray, cams: np.ndarray, keys: np.ndarray, thresholds: list[float],
                   crf: CRFConfig | None, shared_pairwise: bool = True) -> list[np.ndarray]:
    """One label map (0 background, c+1 class c) per background threshold: argmax over
    [a plane at the threshold, the kept CAMs], then the label CRF (when ``crf`` is given).
    The reference's "CRF refiner" of its per-round evaluation is this at one threshold."""
    lut = np.concatenate([[0], np.asarray(keys, np.int64) + 1])
    idx = [threshold_labels(cams, t) for t in thresholds]
    if crf is not None and len(keys) > 0:
        idx = crf_labels(img, idx, len(keys) + 1, crf, shared=shared_pairwise)
    return [lut[i] for i in idx]


def cams_to_pseudo(img: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_thres: float, bg_thres: float,
                   crf: CRFConfig | None, shared_pairwise: bool = True) -> np.ndarray:
    """The pseudo mask (uint8: 0 background, c+1 class c, 255 uncertain) of one image."""
    fg, bg = refined_labels(img, cams, keys, [fg_thres, bg_thres], crf, shared_pairwise)
    return combine_fg_bg(fg, bg)


def combine_fg_bg(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """The pseudo mask from the refined fg and bg label maps: the fg map's label; 255 where
    the fg map says background but the bg map does not; background where both do."""
    mask = fg.copy()
    mask[fg == 0] = 255
    mask[(fg == 0) & (bg == 0)] = 0
    return mask.astype(np.uint8)


def _make_one(image_id: str, root: str, cam_dir: str, out_dir: str, p: dict, crf: CRFConfig | None) -> str:
    layout = VOCLayout(root)
    img = read_image(layout.image(image_id))
    cam = load_cam(cam_path(cam_dir, image_id), img.shape[:2])
    mask = cams_to_pseudo(img, cam["high_res"], cam["keys"], p["fg_thres"], p["bg_thres"], crf, p["shared_pairwise"])
    write_palette_png(Path(out_dir) / f"{image_id}.png", mask)
    return image_id


def make_pseudo_masks(cfg: Config, split: str | None = None, cam_dir: str | Path | None = None,
                      out_dir: str | Path | None = None, redo: bool | None = None, workers: int | None = None,
                      ids: list[str] | None = None, progress: bool | None = None) -> dict:
    p = cfg.pseudo
    split = split or p.split
    cam_dir = Path(cam_dir or p.cam_dir)
    out_dir = Path(out_dir or p.out_dir)
    redo = p.redo if redo is None else redo
    workers = p.workers if workers is None else workers
    all_ids = ids if ids is not None else VOCLayout(cfg.data.root).read_split(split)
    all_ids = all_ids[get_rank()::get_world_size()]  # under torchrun each rank's pool takes its share
    todo = list(all_ids) if redo else [i for i in all_ids if not (out_dir / f"{i}.png").is_file()]
    missing = [i for i in todo if not cam_path(cam_dir, i).is_file()]
    if missing:
        raise DataError(f"{cam_path(cam_dir, missing[0])}: CAM file not found ({len(missing)} of split {split} missing; run make_cam first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    crf = p.crf_params if p.crf else None
    fn = partial(_make_one, root=cfg.data.root, cam_dir=str(cam_dir), out_dir=str(out_dir),
                 p={"fg_thres": p.fg_thres, "bg_thres": p.bg_thres, "shared_pairwise": p.shared_pairwise}, crf=crf)
    t0 = time.perf_counter()
    bar = None
    if (cfg.runtime.progress if progress is None else progress) and todo and get_rank() == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="make_pseudo", dynamic_ncols=True)
    # one image per task: a CRF takes a second, so the hand-out costs nothing and the pool's
    # last images spread over every worker instead of queueing behind one chunk
    for _ in imap_unordered(fn, todo, workers, chunksize=1):
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return {"split": split, "out_dir": str(out_dir), "images": len(all_ids), "computed": len(todo),
            "skipped": len(all_ids) - len(todo), "seconds": round(seconds, 2),
            "images_per_s": len(todo) / seconds if todo and seconds > 0 else 0.0, "workers": workers}


def _conf_chunk(ids: list[str], root: str, gt_dir: str, mask_dir: str, n: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    layout = VOCLayout(root)
    conf_bg = np.zeros((n, n), np.int64)
    conf_confident = np.zeros((n, n), np.int64)
    confident = valid = 0
    for image_id in ids:
        gt = read_mask(layout.mask(image_id, gt_dir), n - 1)
        pred = read_mask(Path(mask_dir) / f"{image_id}.png", n - 1)
        if pred.shape != gt.shape:
            raise DataError(f"{Path(mask_dir) / f'{image_id}.png'}: size {pred.shape} differs from GT {gt.shape}")
        conf_bg += confusion_matrix(gt, pred, n)
        conf_confident += confusion_matrix(gt, pred, n, ignore_pred_255=True)
        v = gt != 255
        valid += int(v.sum())
        confident += int((v & (pred != 255)).sum())
    return conf_bg, conf_confident, confident, valid


def evaluate_masks(cfg: Config, mask_dir: str | Path, split: str, class_names: list[str], workers: int = 0) -> dict:
    """Both pseudo-mask numbers of the evaluation protocol (255 as background, confident pixels only)."""
    n = cfg.data.num_classes + 1
    ids = VOCLayout(cfg.data.root).read_split(split)
    fn = partial(_conf_chunk, root=cfg.data.root, gt_dir=cfg.data.gt_dir, mask_dir=str(mask_dir), n=n)
    conf_bg = np.zeros((n, n), np.int64)
    conf_c = np.zeros((n, n), np.int64)
    confident = valid = 0
    for a, b, c, v in imap_unordered(fn, chunks(ids, workers) if workers > 1 else [ids], workers, chunksize=1):
        conf_bg += a
        conf_c += b
        confident += c
        valid += v
    as_bg = scores(conf_bg, class_names)
    conf_only = scores(conf_c, class_names)
    return {
        "split": split,
        "num_images": len(ids),
        "mask_dir": str(mask_dir),
        "miou_255_as_background": as_bg["miou"],
        "miou_confident_pixels": conf_only["miou"],
        "confident_fraction": confident / valid if valid else float("nan"),
        "ignored_as_background": as_bg,
        "confident_only": conf_only,
    }
