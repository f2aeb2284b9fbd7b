"""One function per pipeline stage: what the thin scripts and run_pipeline call.

Each takes the resolved config, holds the work_dir lock (wsss.workdir), checks that what
it reads and what it would add to was made under this config (wsss.provenance), does its
work (skipping what is finished), prints what a user quotes, saves it under
``<work_dir>/metrics`` and returns it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from wsss import provenance
from wsss.config import Config, ConfigError, save_config
from wsss.data.labels import ImageLabels
from wsss.engine.distributed import barrier, get_world_size, is_main
from wsss.fileio import DataError
from wsss.registry import cam_sources
from wsss.reporting import fmt, md_table, per_class_rows, save_metrics


def _enter(cfg: Config):
    """The work_dir lock (before anything is written), then the runtime and the data."""
    from wsss.data.synthetic import ensure_data
    from wsss.engine.trainer import setup_runtime
    from wsss.workdir import claim

    claim(cfg.work_dir)
    device = setup_runtime(cfg)
    ensure_data(cfg)
    return device


def _prepare(cfg: Config, stage: str, redo: bool = False):
    """Lock, runtime, data, then the stage's provenance checks (wsss.provenance); the
    resolved config is saved only once they passed, so a refused run changes nothing."""
    device = _enter(cfg)
    provenance.begin(cfg, stage, redo)
    if is_main():
        save_config(cfg)
    return device


def train_cam(cfg: Config, resume: bool = True) -> dict:
    """``resume=False`` starts over: this work_dir's CAM checkpoints (and what the method's
    training wrote beside them) are removed first."""
    from wsss.cam.training import train_cam as _train

    _prepare(cfg, "train_cam", redo=not resume)
    path = _train(cfg, resume=resume)
    provenance.settle(cfg, "train_cam")
    return {"checkpoint": str(path)}


def make_cam(cfg: Config, split: str | None = None) -> dict:
    from wsss.cam.make import make_cams, stale_cam_dir
    from wsss.cam.training import load_cam_model

    device = _enter(cfg)
    provenance.begin(cfg, "make_cam")
    model = load_cam_model(cfg, cfg.cam.checkpoint, device)
    err = stale_cam_dir(cfg, model, cfg.cam.out_dir)  # before config.yaml is rewritten
    if err is not None and not cfg.cam.redo:
        raise err
    if is_main():
        save_config(cfg)
    if cfg.runtime.channels_last:
        import torch

        model.to(memory_format=torch.channels_last)
    summary = make_cams(cfg, model, device, split=split, reuse_from=cam_sources(cfg))
    barrier()
    provenance.stamp(cfg, "make_cam", provenance.recorded(cfg, "make_cam"))  # the CAMs' record, for make_cam.json
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

    _prepare(cfg, "eval_cam")
    if not is_main():
        return {}
    return evaluate_cams(cfg)


def part_reliance(cfg: Config) -> dict:
    """Synthetic data: each class's score with its part and with the part erased (the trained
    CAM network of cam.checkpoint, on eval_cam.split); metrics/part_reliance.{json,md}."""
    from wsss.cam.part_reliance import part_reliance as measure
    from wsss.cam.training import load_cam_model
    from wsss.data.voc import VOCLayout

    device = _enter(cfg)
    part_dir = VOCLayout(cfg.data.root).part_dir
    if not part_dir.is_dir():
        raise DataError(f"{part_dir}: no part masks (part_reliance needs the synthetic data)")
    model = load_cam_model(cfg, cfg.cam.checkpoint, device)
    names = ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    out = measure(model, cfg.data.root, cfg.eval_cam.split, cfg.data.num_classes, cfg.train.aug.mean, cfg.train.aug.std,
                  device, names)
    rows = [[c, fmt(m["with_part"]), fmt(m["part_erased"]), fmt(m["absent"]), m["images"], "yes" if m["without_part"] else "no"]
            for c, m in out["per_class"].items()]
    table = md_table(["class", "score with part (%)", "part erased (%)", "class absent (%)", "images", "recognised without its part"], rows)
    md = f"# Part reliance ({out['split']}, {out['num_images']} images)\n\n{table}"
    without = ", ".join(out["recognised_without_part"]) or "none"
    line = f"classes recognised without their part (mean score with the part erased >= {fmt(out['limit'])}%): {without}"
    if is_main():
        j, _ = save_metrics(cfg, "part_reliance", out, md + "\n" + line + "\n")
        print(table)
        print(line)
        print(f"saved {j}")
    return out


def _missing_cams(cfg: Config) -> list[str]:
    """Ids make_pseudo will read whose CAM file is not there (every rank sees the same list)."""
    from wsss.cam.files import cam_path
    from wsss.data.voc import VOCLayout

    p = cfg.pseudo
    ids = VOCLayout(cfg.data.root).read_split(p.split)
    todo = ids if p.redo else [i for i in ids if not (Path(p.out_dir) / f"{i}.png").is_file()]
    return [i for i in todo if not cam_path(p.cam_dir, i).is_file()]


def make_pseudo(cfg: Config) -> dict:
    """Pseudo masks; when CAMs of this experiment are missing and its weights are there,
    make_cam makes them first (same code, same checks)."""
    from wsss.pseudo.make import make_pseudo_masks

    _prepare(cfg, "make_pseudo", redo=cfg.pseudo.redo)
    missing = _missing_cams(cfg)
    own = Path(cfg.pseudo.cam_dir).resolve() == Path(cfg.cam.out_dir).resolve()
    if missing and own and Path(cfg.cam.checkpoint).is_file():
        if is_main():
            print(f"make_pseudo: {len(missing)} CAM files of split {cfg.pseudo.split} are not in {cfg.cam.out_dir}; "
                  f"making them first from {cfg.cam.checkpoint} (make_cam)", flush=True)
        make_cam(cfg, split=cfg.pseudo.split)
        provenance.begin(cfg, "make_pseudo", redo=False)  # the CAMs now match the record written above
    elif missing and own:
        raise DataError(f"{Path(cfg.cam.out_dir) / (missing[0] + '.npz')}: CAM file not found ({len(missing)} of split "
                        f"{cfg.pseudo.split} missing), and no weights to make them: {cfg.cam.checkpoint} not found (run train_cam first)")
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

    _prepare(cfg, "eval_pseudo")
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


def train_seg(cfg: Config, resume: bool = True) -> dict:
    """``resume=False`` starts over: this work_dir's DeepLab checkpoints are removed first."""
    from wsss.seg.training import train_seg as _train

    _prepare(cfg, "train_seg", redo=not resume)
    path = _train(cfg, resume=resume)
    provenance.settle(cfg, "train_seg")
    return {"checkpoint": str(path)}


def eval_seg(cfg: Config) -> dict:
    from wsss.seg.evaluate import evaluate_seg

    device = _prepare(cfg, "eval_seg")
    return evaluate_seg(cfg, device)


def visualize(cfg: Config, n: int | None = None, ids: list[str] | None = None) -> list[str]:
    """Panels of whatever CAMs and masks are there (pictures, no numbers: no provenance check)."""
    from wsss.visualize import write_panels

    _enter(cfg)
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
    from wsss.workdir import WorkDirBusy, release_all

    try:
        fn()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (DataError, WeightsError, CheckpointError, NonFiniteLossError, FileExistsError, WorkDirBusy) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        from wsss.engine.distributed import cleanup_distributed

        cleanup_distributed()
        release_all()

