"""eval_cam: background-threshold sweep of CAMs against GT, and the CAM+CRF score at one threshold."""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from wsss.config import Config, CRFConfig
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.fileio import read_image, read_mask
from wsss.metrics import ThresholdSweep, confusion_matrix, coverage, region_map, region_rows, scores, threshold_range
from wsss.parallel import chunks, imap_unordered, workers_for
from wsss.pseudo.refine import crf_device, refined_labels
from wsss.reports import md_table, pct, per_class_rows, save_metrics


def coverage_table(cov: dict) -> str:
    """Part / body (outside the part) coverage and background false positives (and on decoy
    bodies alone, where the data has decoys), in percent."""
    decoys = "decoy_body_fp" in cov["best"]
    rows = []
    for key in ("best", "fixed"):
        c = cov[key]
        rows.append([f"all ({key} {c['threshold']:.2f})", pct(c["part"]), pct(c["body"]), pct(c["background_fp"])]
                    + ([pct(c["decoy_body_fp"])] if decoys else []))
        rows += [[f"  {name}", pct(v["part"]), pct(v["body"]), pct(v["background_fp"])] + ([pct(v["decoy_body_fp"])] if decoys else [])
                 for name, v in c["per_class"].items()]
    return md_table(["class (threshold)", "part covered", "body covered", "background FP"]
                    + (["decoy body FP"] if decoys else []), rows)


def sweep_thresholds(cfg: Config) -> list[float]:
    e = cfg.eval_cam
    ts = list(e.thresholds) or threshold_range(e.threshold_start, e.threshold_stop, e.threshold_step)
    if e.report_threshold >= 0 and not any(abs(t - e.report_threshold) < 1e-9 for t in ts):
        ts.append(e.report_threshold)
    return sorted(ts)


def _sweep_chunk(ids: list[str], root: str, gt_dir: str, cam_dir: str, num_classes: int, thresholds: list[float],
                 parts: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    layout = VOCLayout(root)
    sweep = ThresholdSweep(num_classes, thresholds)
    decoys = parts and layout.decoy_dir.is_dir()
    regions = ThresholdSweep(num_classes, thresholds, gt_rows=region_rows(num_classes, decoys)) if parts else None
    for image_id in ids:
        gt = read_mask(layout.mask(image_id, gt_dir), num_classes)
        cam = load_cam(cam_path(cam_dir, image_id), gt.shape, num_classes)
        sweep.add(gt, cam["high_res"], cam["keys"])
        if regions is not None:
            part = read_mask(layout.part_dir / f"{image_id}.png", num_classes)
            decoy = read_mask(layout.decoy_dir / f"{image_id}.png", 2) if decoys else None
            regions.add(region_map(gt, part, num_classes, decoy), cam["high_res"], cam["keys"])
    return sweep.hist, regions.hist if regions is not None else None


def _crf_chunk(ids: list[str], root: str, gt_dir: str, cam_dir: str, num_classes: int, threshold: float,
               crf: CRFConfig, device=None) -> np.ndarray:
    layout = VOCLayout(root)
    n = num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for image_id in ids:
        gt = read_mask(layout.mask(image_id, gt_dir), num_classes)
        cam = load_cam(cam_path(cam_dir, image_id), gt.shape, num_classes)
        img = read_image(layout.image(image_id))
        (pred,) = refined_labels(img, cam["high_res"], cam["keys"], [threshold], crf, device=device)
        conf += confusion_matrix(gt, pred, n)
    return conf


def crf_split(cfg: Config, split: str, cam_dir: str | Path, threshold: float, workers: int = 0) -> np.ndarray:
    """The confusion matrix of CAM+CRF at ``threshold`` over a split (in ``workers`` processes)."""
    ids = VOCLayout(cfg.data.root).read_split(split)
    n = cfg.data.num_classes + 1
    device, here = crf_device(cfg, cfg.pseudo.crf_params)
    workers = 0 if here else workers
    fn = partial(_crf_chunk, root=cfg.data.root, gt_dir=cfg.data.gt_dir, cam_dir=str(cam_dir),
                 num_classes=cfg.data.num_classes, threshold=threshold, crf=cfg.pseudo.crf_params, device=device)
    conf = np.zeros((n, n), np.int64)
    for part in imap_unordered(fn, chunks(ids, workers) if workers > 1 else [ids], workers, chunksize=1):
        conf += part
    return conf


def sweep_split(cfg: Config, split: str, cam_dir: str | Path, thresholds: list[float], workers: int = 0,
                parts: bool = False) -> tuple[ThresholdSweep, ThresholdSweep | None]:
    """Accumulate the sweep over a split (in ``workers`` processes); with ``parts``, also the
    sweep over the synthetic data's part / body / background regions."""
    ids = VOCLayout(cfg.data.root).read_split(split)
    k = cfg.data.num_classes
    sweep = ThresholdSweep(k, thresholds)
    regions = ThresholdSweep(k, thresholds, gt_rows=region_rows(k, VOCLayout(cfg.data.root).decoy_dir.is_dir())) if parts else None
    fn = partial(_sweep_chunk, root=cfg.data.root, gt_dir=cfg.data.gt_dir, cam_dir=str(cam_dir),
                 num_classes=k, thresholds=thresholds, parts=parts)
    for hist, region_hist in imap_unordered(fn, chunks(ids, workers) if workers > 1 else [ids], workers, chunksize=1):
        sweep.hist += hist
        if regions is not None:
            regions.hist += region_hist
    return sweep, regions


def _at(sweep: ThresholdSweep, t: float) -> np.ndarray:
    return sweep.confusions()[int(np.argmin(np.abs(sweep.thresholds - t)))]


def evaluate_cams(cfg: Config, split: str | None = None, cam_dir: str | Path | None = None, name: str = "cam_eval",
                  workers: int | None = None, save: bool = True, verbose: bool = True) -> dict:
    e = cfg.eval_cam
    split = split or e.split
    cam_dir = Path(cam_dir or e.cam_dir)
    thresholds = sweep_thresholds(cfg)
    # rank 0 alone evaluates while the other ranks wait: the whole node's cores
    workers = workers_for(cfg.pseudo.workers if workers is None else workers, whole_node=True)
    t0 = time.perf_counter()
    has_parts = VOCLayout(cfg.data.root).part_dir.is_dir()
    sweep, regions = sweep_split(cfg, split, cam_dir, thresholds, workers, parts=has_parts)
    classes = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    results = sweep.results(classes)
    best = max(results, key=lambda r: r["miou"])
    report = None
    if e.report_threshold >= 0:
        report = min(results, key=lambda r: abs(r["threshold"] - e.report_threshold))
    refined = None
    if e.crf:
        t = report["threshold"] if report is not None else best["threshold"]
        refined = {"threshold": t, **scores(crf_split(cfg, split, cam_dir, t, workers), classes)}
    out = {
        "split": split,
        "cam_dir": str(cam_dir),
        "num_images": int(len(VOCLayout(cfg.data.root).read_split(split))),
        "best_threshold": best["threshold"],
        "miou": best["miou"],
        "best": best,
        "report": report,
        "crf": refined,  # CAM+CRF at one threshold (the report threshold, else the best)
        "miou_crf": refined["miou"] if refined else None,
        # synthetic data: how much of each object's part and body the CAM covers
        "coverage": None if regions is None else {
            "best": {"threshold": best["threshold"], **coverage(_at(regions, best["threshold"]), classes[1:])},
            "fixed": {"threshold": e.coverage_threshold, **coverage(_at(regions, e.coverage_threshold), classes[1:])},
        },
        "curve": [{"threshold": r["threshold"], "miou": r["miou"]} for r in results],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    md = (f"# CAM evaluation ({split}, {out['num_images']} images)\n\n"
          f"Best background threshold **{best['threshold']:.2f}**: mIoU **{pct(best['miou'])}**\n\n")
    if report is not None:
        md += f"At the reporting threshold {report['threshold']:.2f}: mIoU {pct(report['miou'])}\n\n"
    if refined is not None:
        md += f"CAM+CRF (label CRF of the pseudo masks) at {refined['threshold']:.2f}: mIoU **{pct(refined['miou'])}**\n\n"
    md += md_table(["class", "IoU", "precision", "recall"], per_class_rows(best))
    if out["coverage"] is not None:
        md += "\n## Coverage of parts and bodies (synthetic data)\n\n" + coverage_table(out["coverage"])
    if refined is not None:
        md += f"\n## CAM+CRF at {refined['threshold']:.2f}\n\n" + md_table(["class", "IoU", "precision", "recall"],
                                                                            per_class_rows(refined))
    md += "\n## mIoU by threshold\n\n" + md_table(["threshold", "mIoU"], [[f"{r['threshold']:.2f}", pct(r["miou"])] for r in results])
    if save:
        j, m = save_metrics(cfg, name, out, md)
        out["files"] = [str(j), str(m)]
    if verbose:
        print(md_table(["class", "IoU", "precision", "recall"], per_class_rows(best)))
        if out["coverage"] is not None:
            print(coverage_table(out["coverage"]))
        line = f"CAM mIoU on {split}: {pct(best['miou'])} at best threshold {best['threshold']:.2f}"
        if report is not None:
            line += f"; {pct(report['miou'])} at {report['threshold']:.2f}"
        if refined is not None:
            line += f"; CAM+CRF {pct(refined['miou'])} at {refined['threshold']:.2f}"
        print(line)
        if save:
            print(f"saved {out['files'][0]}")
    return out


def eval_cam_stage(cfg: Config, device, redo: bool) -> dict:
    """The eval_cam stage (wsss.stages)."""
    return evaluate_cams(cfg)
