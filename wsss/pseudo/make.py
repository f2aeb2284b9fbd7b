"""make_pseudo: a pseudo mask per image of a split from its CAMs (wsss.pseudo.refine), in
worker processes, sharded across ranks; and their evaluation against GT (eval_pseudo)."""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from wsss.config import Config, CRFConfig
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.distributed import barrier, get_rank, get_world_size, is_main, main_first
from wsss.fileio import DataError, read_image, read_mask, remove_stale_temps, write_palette_png
from wsss.metrics import confusion_matrix, scores
from wsss.parallel import chunks, imap_unordered, workers_for
from wsss.pseudo.refine import cams_to_pseudo, crf_device
from wsss.reports import md_table, pct, per_class_rows, save_metrics


def _make_one(image_id: str, root: str, cam_dir: str, out_dir: str, p: dict, crf: CRFConfig | None, device=None) -> str:
    layout = VOCLayout(root)
    img = read_image(layout.image(image_id))
    cam = load_cam(cam_path(cam_dir, image_id), img.shape[:2])
    mask = cams_to_pseudo(img, cam["high_res"], cam["keys"], p["fg_thres"], p["bg_thres"], crf, p["shared_pairwise"], device)
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
    workers = workers_for(p.workers if workers is None else workers)
    # a killed run's temporary files go first, by one rank, before any rank's workers write here
    main_first(lambda: remove_stale_temps(out_dir))
    all_ids = ids if ids is not None else VOCLayout(cfg.data.root).read_split(split)
    all_ids = all_ids[get_rank()::get_world_size()]  # under torchrun each rank's pool takes its share
    todo = list(all_ids) if redo else [i for i in all_ids if not (out_dir / f"{i}.png").is_file()]
    missing = [i for i in todo if not cam_path(cam_dir, i).is_file()]
    if missing:
        raise DataError(f"{cam_path(cam_dir, missing[0])}: CAM file not found ({len(missing)} of split {split} missing; run make_cam first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    crf = p.crf_params if p.crf else None
    device, here = crf_device(cfg, crf)
    if here:
        workers = 0
    fn = partial(_make_one, root=cfg.data.root, cam_dir=str(cam_dir), out_dir=str(out_dir),
                 p={"fg_thres": p.fg_thres, "bg_thres": p.bg_thres, "shared_pairwise": p.shared_pairwise}, crf=crf,
                 device=device)
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


def _missing_cams(cfg: Config) -> list[str]:
    """Ids make_pseudo will read whose CAM file is not there (every rank sees the same list)."""
    p = cfg.pseudo
    ids = VOCLayout(cfg.data.root).read_split(p.split)
    todo = ids if p.redo else [i for i in ids if not (Path(p.out_dir) / f"{i}.png").is_file()]
    return [i for i in todo if not cam_path(p.cam_dir, i).is_file()]


def make_pseudo_stage(cfg: Config, device, redo: bool) -> dict:
    """The make_pseudo stage (wsss.stages): pseudo masks of pseudo.split; when CAMs of this experiment are missing and its weights are there,
    make_cam makes them first (same code, same checks)."""
    from wsss.stages import run

    missing = _missing_cams(cfg)
    own = Path(cfg.pseudo.cam_dir).resolve() == Path(cfg.cam.out_dir).resolve()
    if missing and own and Path(cfg.cam.checkpoint).is_file():
        if is_main():
            print(f"make_pseudo: {len(missing)} CAM files of split {cfg.pseudo.split} are not in {cfg.cam.out_dir}; "
                  f"making them first from {cfg.cam.checkpoint} (make_cam)", flush=True)
        run(cfg, "make_cam", split=cfg.pseudo.split)
    elif missing and own:
        raise DataError(f"{Path(cfg.cam.out_dir) / (missing[0] + '.npz')}: CAM file not found ({len(missing)} of split "
                        f"{cfg.pseudo.split} missing), and no weights to make them: {cfg.cam.checkpoint} not found (run train_cam first)")
    summary = make_pseudo_masks(cfg, redo=redo)  # each rank's worker pool takes its share of the ids
    barrier()
    if not is_main():
        return {}
    print(f"pseudo masks of {summary['images']} images in {summary['out_dir']} "
          f"({summary['computed']} computed, {summary['images_per_s']:.2f} images/s with {summary['workers']} workers)")
    save_metrics(cfg, "make_pseudo", summary, md_table(["split", "images (rank 0)", "computed", "images/s", "workers"],
                 [[summary["split"], summary["images"], summary["computed"], f"{summary['images_per_s']:.2f}", summary["workers"]]]))
    return summary


def eval_pseudo_stage(cfg: Config, device, redo: bool) -> dict:
    """The eval_pseudo stage (wsss.stages): both numbers of the evaluation protocol."""
    p = cfg.pseudo
    if not p.eval_split:
        return {}
    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    r = evaluate_masks(cfg, p.out_dir, p.eval_split, names, workers=workers_for(p.workers, whole_node=True))
    md = (f"# Pseudo masks ({r['split']}, {r['num_images']} images)\n\n"
          f"* mIoU with uncertain (255) pixels counted as background: **{pct(r['miou_255_as_background'])}**\n"
          f"* mIoU over confident pixels only: **{pct(r['miou_confident_pixels'])}** "
          f"(confident fraction of valid GT pixels: {pct(r['confident_fraction'])}%)\n\n"
          "## 255 as background\n\n" + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r["ignored_as_background"]))
          + "\n## confident pixels only\n\n" + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r["confident_only"])))
    j, _ = save_metrics(cfg, "pseudo_eval", r, md)
    print(f"pseudo-mask mIoU on {r['split']}: {pct(r['miou_255_as_background'])} (255 as background); "
          f"{pct(r['miou_confident_pixels'])} on confident pixels ({pct(r['confident_fraction'])}% confident)")
    print(f"saved {j}")
    return r
