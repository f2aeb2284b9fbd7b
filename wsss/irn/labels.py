"""make_irn_labels: CAMs + boundary maps -> random walk -> label maps (the reference's
make_sem_seg_labels).

Per image: the boundary map B at stride 4 (:func:`wsss.irn.model.boundary_map`); the
CAM at stride 4 (the CAM file's ``strided`` map; without one, its ``high_res`` map
resized bilinearly to stride 4, as GSLM does); the walk of ``cam * (1 - B)``
(:mod:`wsss.irn.walk`); the result upsampled x4 (bilinear, ``align_corners=False``),
cut to the image, divided by its maximum over all classes and pixels; a background
plane at ``bg_thres`` (0.25) in front; argmax; class c + 1 for the c-th key.
There is no background channel in the walk: background is only the plane.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.cam_files import cam_path, load_cam
from wsss.irn.model import BoundaryNet, boundary_map, feature_size
from wsss.irn.walk import dense_random_walk, sparse_random_walk

WALKS = {"sparse": sparse_random_walk, "dense": dense_random_walk}


def strided_cams(cam: dict, image_hw: tuple[int, int]) -> torch.Tensor:
    """The CAM [k, ceil(H/4), ceil(W/4)] (float32) from a loaded CAM file (wsss.data.cam_files)."""
    size = feature_size(image_hw)
    if "strided" in cam:
        st = torch.from_numpy(np.asarray(cam["strided"], np.float32))
        if tuple(st.shape[1:]) != size:
            raise ValueError(f"strided CAM is {tuple(st.shape[1:])}, expected {size} for an image of {image_hw}")
        return st
    hr = torch.from_numpy(np.asarray(cam["high_res"], np.float32))
    if hr.shape[0] == 0:
        return hr.new_zeros((0, *size))
    return F.interpolate(hr[None], size, mode="bilinear", align_corners=False)[0]


def walk_scores(cams: torch.Tensor, boundary: torch.Tensor, image_hw: tuple[int, int], beta: float = 10,
                exp_times: int = 8, radius: int = 5, walk: str = "sparse") -> torch.Tensor:
    """The walked class maps at image size [k, H, W], divided by their common maximum."""
    h, w = image_hw
    if tuple(cams.shape[1:]) != tuple(boundary.shape):
        raise ValueError(f"CAM {tuple(cams.shape[1:])} and boundary map {tuple(boundary.shape)} differ in size")
    rw = WALKS[walk](cams, boundary, beta=beta, exp_times=exp_times, radius=radius)
    up = F.interpolate(rw[:, None], scale_factor=4, mode="bilinear", align_corners=False)[:, 0, :h, :w]
    peak = up.max()
    # an image whose CAMs are all 0 (the reference divides 0 by 0 and argmax picks the
    # first NaN, the first class): all background here
    return up / peak if peak > 0 else torch.zeros_like(up)


def scores_to_labels(scores: torch.Tensor, keys, bg_thres: float = 0.25) -> np.ndarray:
    """uint8 [H, W]: 0 where no class map exceeds ``bg_thres``, else keys[argmax] + 1
    (ties go to the lower index, the background first, as torch.argmax)."""
    planes = F.pad(scores, (0, 0, 0, 0, 1, 0), value=bg_thres)
    lut = np.concatenate([[0], np.asarray(keys, np.int64) + 1]).astype(np.uint8)
    return lut[torch.argmax(planes, 0).cpu().numpy()]


def irn_label_map(cams: torch.Tensor, keys, boundary: torch.Tensor, image_hw: tuple[int, int], beta: float = 10,
                  exp_times: int = 8, radius: int = 5, bg_thres: float = 0.25, walk: str = "sparse") -> np.ndarray:
    """One image's label map (uint8 [H, W]) from its stride-4 CAM [k, h, w] (k = len(keys))
    and boundary map [h, w]."""
    h, w = image_hw
    if len(keys) == 0:
        return np.zeros((h, w), np.uint8)
    scores = walk_scores(cams, boundary, image_hw, beta, exp_times, radius, walk)
    return scores_to_labels(scores, keys, bg_thres)


def image_irn_labels(model: BoundaryNet | None, image: np.ndarray, cam: dict, mean, std, beta: float = 10,
                     exp_times: int = 8, radius: int = 5, bg_thres: float = 0.25, canvas: int = 512,
                     walk: str = "sparse", device: torch.device | str = "cpu") -> np.ndarray:
    """The label map of one RGB uint8 image [H, W, 3] and its CAM file's content.
    ``model`` None: a boundary map of zeros (irn.boundary: zeros, the walk without boundaries)."""
    from wsss.data.transforms import normalize

    hw = image.shape[:2]
    if model is None:
        boundary = torch.zeros(feature_size(hw), device=device)
    else:
        x = torch.from_numpy(np.ascontiguousarray(normalize(image, mean, std).transpose(2, 0, 1))).to(device)
        boundary = boundary_map(model, x, canvas)
    cams = strided_cams(cam, hw).to(device)
    return irn_label_map(cams, cam["keys"], boundary, hw, beta, exp_times, radius, bg_thres, walk)


def make_irn_labels(model: BoundaryNet | None, root: str | Path, ids: list[str], cam_dir: str | Path, out_dir: str | Path,
                    irn, mean, std, device: torch.device | str = "cpu", redo: bool = False, progress: bool = False) -> dict:
    """Label PNGs (VOC palette) for ``ids`` into ``out_dir``; finished ones are skipped
    unless ``redo``. ``irn``: the config's ``irn`` section (walk settings).
    Under torchrun each rank takes every world_size-th id."""
    from wsss.data.voc import VOCLayout
    from wsss.engine.distributed import get_rank, get_world_size
    from wsss.fileio import DataError, read_image, write_palette_png

    layout = VOCLayout(root)
    ids = list(ids)[get_rank()::get_world_size()]
    out_dir, cam_dir = Path(out_dir), Path(cam_dir)
    todo = list(ids) if redo else [i for i in ids if not (out_dir / f"{i}.png").is_file()]
    missing = [i for i in todo if not cam_path(cam_dir, i).is_file()]
    if missing:
        raise DataError(f"{cam_path(cam_dir, missing[0])}: CAM file not found ({len(missing)} missing; run make_cam first)")
    out_dir.mkdir(parents=True, exist_ok=True)  # its leftover temporary files: removed by the stage's claim
    if model is not None:
        model.eval()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="make_irn_labels", dynamic_ncols=True)
    t0 = time.perf_counter()
    for image_id in todo:
        img = read_image(layout.image(image_id))
        cam = load_cam(cam_path(cam_dir, image_id), img.shape[:2])
        labels = image_irn_labels(model, img, cam, mean, std, irn.beta, irn.exp_times, irn.walk_radius, irn.bg_thres,
                                  irn.infer_canvas, irn.walk, device)
        write_palette_png(out_dir / f"{image_id}.png", labels)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return {"out_dir": str(out_dir), "images": len(ids), "computed": len(todo), "skipped": len(ids) - len(todo),
            "seconds": round(seconds, 2), "images_per_s": len(todo) / seconds if todo and seconds > 0 else 0.0}
