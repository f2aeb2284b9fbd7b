"""One function per pipeline stage: what the thin scripts and run_pipeline call.

Each takes the resolved config, does its work (skipping what is finished),
prints what a user quotes, saves it under ``<work_dir>/metrics`` and returns it.
"""
from __future__ import annotations

import sys
from typing import Callable

from wsss.config import Config, ConfigError, save_config
from wsss.data.labels import ImageLabels
from wsss.engine.distributed import barrier, get_world_size, is_main
from wsss.fileio import DataError
from wsss.registry import cam_sources
from wsss.reporting import fmt, md_table, per_class_rows, save_metrics


def _prepare(cfg: Config):
    from wsss.data.synthetic import ensure_data
    from wsss.engine.trainer import setup_runtime

    device = setup_runtime(cfg)
    ensure_data(cfg)
    if is_main():
        save_config(cfg)
    return device


def train_cam(cfg: Config) -> dict:
    from wsss.cam.training import train_cam as _train

    path = _train(cfg)
    return {"checkpoint": str(path)}


def make_cam(cfg: Config) -> dict:
    from wsss.cam.make import make_cams
    from wsss.cam.training import load_cam_model

    device = _prepare(cfg)
    model = load_cam_model(cfg, cfg.cam.checkpoint, device)
    if cfg.runtime.channels_last:
        import torch

        model.to(memory_format=torch.channels_last)
    summary = make_cams(cfg, model, device, reuse_from=cam_sources(cfg))
    barrier()
    if is_main():
        summary["ranks"] = get_world_size()
        save_metrics(cfg, "make_cam", summary, md_table(
            ["split", "images", "computed (rank 0)", "reused (rank 0)", "images/s (rank 0)"],
            [[summary["split"], summary["images"], summary["computed_here"], summary["reused_here"], f"{summary['images_per_s']:.2f}"]]))
        reused = f", {summary['reused_here']} linked from the training run's own CAMs" if summary["reused_here"] else ""
        print(f"CAMs of {summary['images']} images in {summary['out_dir']} "
              f"({summary['computed_here']} computed on rank 0{reused}, {summary['images_per_s']:.2f} images/s)")
    return summary


def eval_cam(cfg: Config) -> dict:
    from wsss.cam.evaluate import evaluate_cams

    _prepare(cfg)
    if not is_main():
        return {}
    return evaluate_cams(cfg)


def make_pseudo(cfg: Config) -> dict:
    from wsss.pseudo.make import make_pseudo_masks

    _prepare(cfg)
    summary = make_pseudo_masks(cfg)  # each rank's worker pool takes its share of the ids
    barrier()
    if not is_main():
        return {}
    print(f"pseudo masks of {summary['images']} images in {summary['out_dir']} "
          f"({summary['computed']} computed, {summary['images_per_s']:.2f} images/s with {summary['workers']} workers)")
    save_metrics(cfg, "make_pseudo", summary, md_table(["split", "images (rank 0)", "computed", "images/s", "workers"],
                 [[summary["split"], summary["images"], summary["computed"], f"{summary['images_per_s']:.2f}", summary["workers"]]]))
    return summary


def eval_pseudo(cfg: Config) -> dict:
    from wsss.pseudo.make import evaluate_masks

    _prepare(cfg)
    p = cfg.pseudo
    if not is_main() or not p.eval_split:
        return {}
    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    r = evaluate_masks(cfg, p.out_dir, p.eval_split, names, workers=p.workers)
    md = (f"# Pseudo masks ({r['split']}, {r['num_images']} images)\n\n"
          f"* mIoU with uncertain (255) pixels counted as background: **{fmt(r['miou_255_as_background'])}**\n"
          f"* mIoU over confident pixels only: **{fmt(r['miou_confident_pixels'])}** "
          f"(confident fraction of valid GT pixels: {fmt(r['confident_fraction'])}%)\n\n"
          "## 255 as background\n\n" + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r["ignored_as_background"]))
          + "\n## confident pixels only\n\n" + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r["confident_only"])))
    j, _ = save_metrics(cfg, "pseudo_eval", r, md)
    print(f"pseudo-mask mIoU on {r['split']}: {fmt(r['miou_255_as_background'])} (255 as background); "
          f"{fmt(r['miou_confident_pixels'])} on confident pixels ({fmt(r['confident_fraction'])}% confident)")
    print(f"saved {j}")
    return r


def train_seg(cfg: Config) -> dict:
    from wsss.seg.training import train_seg as _train

    path = _train(cfg)
    return {"checkpoint": str(path)}


def eval_seg(cfg: Config) -> dict:
    from wsss.seg.evaluate import evaluate_seg

    device = _prepare(cfg)
    return evaluate_seg(cfg, device)


def visualize(cfg: Config, n: int | None = None, ids: list[str] | None = None) -> list[str]:
    from wsss.visualize import write_panels

    _prepare(cfg)
    if not is_main():
        return []
    return write_panels(cfg, n=n, ids=ids)


STAGES: dict[str, Callable[[Config], dict]] = {
    "train_cam": train_cam,
    "make_cam": make_cam,
    "eval_cam": eval_cam,
    "make_pseudo": make_pseudo,
    "eval_pseudo": eval_pseudo,
    "train_seg": train_seg,
    "eval_seg": eval_seg,
}


def one_line(msg: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (which wraps it
    in a traceback), or the message itself."""
    if "Original Traceback" in msg:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return msg.strip().splitlines()[0] if msg.strip() else msg


def run_script(fn: Callable[[], object]) -> None:
    """Run a script's main; known failures print one line and exit non-zero."""
    from wsss.engine.checkpoint import CheckpointError
    from wsss.engine.trainer import NonFiniteLossError
    from wsss.models.backbones import WeightsError

    try:
        fn()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (DataError, WeightsError, CheckpointError, NonFiniteLossError, FileExistsError) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        from wsss.engine.distributed import cleanup_distributed

        cleanup_distributed()

