"""Every path of a work_dir, named once: where each stage writes, and what a redo removes.

    <work_dir>/
      .lock                     the run that holds the work_dir (wsss.lock)
      config.yaml               the resolved config
      checkpoints/              train_cam: last.pth, <phase>.pth, final.pth, made_by.json
      <section>/                what a method's training writes beside them (gslm/round<r>/...)
      cams/                     make_cam: <id>.npz, made_by.json
      pseudo/                   make_pseudo: <id>.png, made_by.json
      irn/checkpoints/          train_irn: the boundary network, made_by.json
      irn/labels/               make_irn_labels: <id>.png (the random walk's labels), made_by.json
      seg/checkpoints/          train_seg: last.pth, deeplab.pth, final.pth, made_by.json
      seg/val_pred/             eval_seg: coloured val predictions
      seg/results/VOC2012/Segmentation/comp6_test_cls/   eval_seg: test PNGs for the server
      metrics/<name>.{json,md}  every stage's numbers; metrics/<section>_* a method's
      pipeline/<stage>.json     run_pipeline's marker of each finished stage
      tb/, tb_irn/, tb_seg/     TensorBoard
      vis/                      side-by-side panels

A config's empty paths (``cam.checkpoint``, ``cam.out_dir``, ``pseudo.out_dir``,
``seg.out_dir``, ...) take these defaults when it is loaded (:func:`fill_paths`). What a
stage owns here is an :class:`Outputs` in its row of ``wsss.stages.STAGES``; a redo
removes exactly that (:func:`clear`). A method writes only under ``<work_dir>/<its
section>/`` and ``metrics/<its section>_*``: they go with train_cam's outputs.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wsss.errors import ConfigError

RECORD = "made_by.json"  # beside a producing stage's files: what they were made from (wsss.records)
LOCK = ".lock"


def work(cfg: Any) -> Path:
    return Path(cfg.work_dir)


def lock_file(work_dir: str | os.PathLike) -> Path:
    return Path(work_dir) / LOCK


def config_file(cfg: Any) -> Path:
    return work(cfg) / "config.yaml"


def cam_checkpoints(cfg: Any) -> Path:
    return work(cfg) / "checkpoints"


def seg_checkpoints(cfg: Any) -> Path:
    return Path(cfg.seg.out_dir) / "checkpoints"


def irn_checkpoints(cfg: Any) -> Path:
    return Path(cfg.irn.out_dir) / "checkpoints"


def irn_labels(cfg: Any) -> Path:
    return Path(cfg.irn.out_dir) / "labels"


def seg_predictions(cfg: Any) -> Path:
    return Path(cfg.seg.out_dir) / "val_pred"


def seg_test_export(cfg: Any) -> Path:
    """The layout the VOC evaluation server takes."""
    return Path(cfg.seg.out_dir) / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"


def metrics_dir(cfg: Any) -> Path:
    return work(cfg) / "metrics"


def phase_metrics(cfg: Any, stage: str, phase: str) -> Path:
    """A training phase's numbers (loss terms, throughput), under its stage's name."""
    return metrics_dir(cfg) / f"{stage}_{phase}.json"


def marker(cfg: Any, stage: str) -> Path:
    return work(cfg) / "pipeline" / f"{stage}.json"


def tensorboard(cfg: Any, name: str) -> Path:
    return work(cfg) / name


def vis_dir(cfg: Any) -> Path:
    return work(cfg) / "vis"


def method_dir(cfg: Any, section: str) -> Path:
    """Where a method's training writes (its config section's name)."""
    return work(cfg) / section


# --------------------------------------------------------------------------
# a config's paths
# --------------------------------------------------------------------------
OUTPUT_KEYS = ["cam.out_dir", "pseudo.out_dir", "irn.out_dir", "irn.checkpoint", "seg.out_dir", "seg.checkpoint"]


def fill_paths(cfg: Any) -> None:
    """The defaults of the paths a config left empty; every path a stage writes must lie under work_dir."""
    if not cfg.exp_name:
        cfg.exp_name = "experiment"
    if not cfg.work_dir:
        cfg.work_dir = str(Path("work_dirs") / cfg.exp_name)
    if not cfg.data.label_file:
        cfg.data.label_file = str(Path(cfg.data.root) / "cls_labels.json")
    if not cfg.cam.checkpoint:
        cfg.cam.checkpoint = str(cam_checkpoints(cfg) / "final.pth")
    if not cfg.cam.out_dir:
        cfg.cam.out_dir = str(work(cfg) / "cams")
    if not cfg.eval_cam.cam_dir:
        cfg.eval_cam.cam_dir = cfg.cam.out_dir
    if not cfg.pseudo.cam_dir:
        cfg.pseudo.cam_dir = cfg.cam.out_dir
    if not cfg.pseudo.out_dir:
        cfg.pseudo.out_dir = str(work(cfg) / "pseudo")
    irn = cfg.irn
    if not irn.out_dir:
        irn.out_dir = str(work(cfg) / "irn")
    if not irn.mask_dir:
        irn.mask_dir = cfg.pseudo.out_dir
    if not irn.cam_dir:
        irn.cam_dir = cfg.cam.out_dir
    if not irn.checkpoint:
        irn.checkpoint = str(irn_checkpoints(cfg) / "final.pth")
    s = cfg.seg
    if not s.out_dir:
        s.out_dir = str(work(cfg) / "seg")
    if not s.mask_dir:
        s.mask_dir = str(irn_labels(cfg)) if s.masks == "irn" else cfg.pseudo.out_dir
    if not s.checkpoint:
        s.checkpoint = str(seg_checkpoints(cfg) / "final.pth")
    if s.weights == "from_cam":
        s.weights = cfg.cam.checkpoint
    root = work(cfg).resolve()
    for key in OUTPUT_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not inside(value, root):
            raise ConfigError(f"{key}: {value} is outside work_dir {cfg.work_dir}; outputs are written under work_dir only")


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def protected(cfg: Any) -> list[Path]:
    """Inputs of the config that may lie inside work_dir and must survive any redo."""
    paths = [cfg.data.root, cfg.data.label_file, cfg.model.weights, cfg.seg.weights, cfg.seg.mask_dir,
             cfg.eval_cam.cam_dir, cfg.pseudo.cam_dir, cfg.cam.checkpoint, cfg.seg.checkpoint, cfg.irn.weights,
             cfg.irn.mask_dir, cfg.irn.cam_dir, cfg.irn.checkpoint]
    ours = [cam_checkpoints(cfg), seg_checkpoints(cfg), Path(cfg.cam.out_dir), Path(cfg.pseudo.out_dir),
            irn_checkpoints(cfg), irn_labels(cfg)]
    return [Path(p) for p in paths if p and p != "none" and Path(p).exists() and not any(inside(p, d) for d in ours)]


# --------------------------------------------------------------------------
# what a stage leaves here
# --------------------------------------------------------------------------
def _none(cfg: Any) -> list:
    return []


@dataclass(frozen=True)
class Outputs:
    """What a stage leaves in a work_dir (each a function of the config)."""

    # its files and their record (made_by.json); None: an evaluation, whose record is in its metrics
    folder: Callable[[Any], Path] | None = None
    files: str = "*"  # glob of its finished files in ``folder``
    whole: bool = False  # ``folder`` holds nothing else: a redo removes it whole
    dirs: Callable[[Any], list[Path]] = _none  # other folders of its outputs (removed whole)
    logs: Callable[[Any], list[Path]] = _none  # folders of logs only it writes (removed whole; not outputs)
    metrics: Callable[[Any], list[str]] = _none  # globs under metrics/ of the files it writes


def finished(folder: Path, pattern: str) -> list[Path]:
    """The finished files of a folder (a temporary file starts with '.')."""
    return [p for p in folder.glob(pattern) if not p.name.startswith(".")] if folder.is_dir() else []


def has_outputs(cfg: Any, out: Outputs) -> bool:
    """Whether anything a rerun would reuse is there (a record alone protects nothing)."""
    if out.folder is not None and finished(out.folder(cfg), out.files):
        return True
    return any(d.is_dir() and any(d.iterdir()) for d in out.dirs(cfg))


def clear(cfg: Any, out: Outputs) -> None:
    """Remove what a stage wrote in this work_dir (only that: inputs and other stages' outputs stay)."""
    for leftover in work(cfg).glob(".discarded-*"):  # from a redo that was killed while deleting
        shutil.rmtree(leftover, ignore_errors=True)
    if out.folder is not None:
        if out.whole:
            discard_dir(cfg, out.folder(cfg))
        else:
            discard_files(out.folder(cfg), out.files)
    for d in [*out.dirs(cfg), *out.logs(cfg)]:
        discard_dir(cfg, d)
    discard_metrics(cfg, out.metrics(cfg))


def discard_dir(cfg: Any, folder: Path) -> None:
    """Remove a folder of this work_dir: renamed away in one step, then deleted, so a crash
    leaves either the whole old folder or none of it."""
    root = work(cfg).resolve()
    if not folder.exists():
        return
    f = folder.resolve()
    if f == root or root not in f.parents:
        raise ConfigError(f"{folder}: not a folder inside work_dir {cfg.work_dir}; not removed")
    keep = [p for p in protected(cfg) if inside(p, f)]
    if keep:
        raise ConfigError(f"{folder}: holds {keep[0]}, an input of this config; move it out of the work_dir to redo this stage")
    trash = root / f".discarded-{os.getpid()}-{folder.name}"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(f, trash)
    shutil.rmtree(trash, ignore_errors=True)


def discard_files(folder: Path, pattern: str) -> None:
    """A stage's files in a folder it may share with inputs; its record goes last."""
    if not folder.is_dir():
        return
    for p in folder.glob(pattern):
        if p.is_file() and p.name != RECORD:
            p.unlink(missing_ok=True)
    for p in folder.glob(".*.tmp*"):
        p.unlink(missing_ok=True)
    (folder / RECORD).unlink(missing_ok=True)


def discard_metrics(cfg: Any, patterns: list[str]) -> None:
    for pattern in patterns:
        for p in metrics_dir(cfg).glob(pattern):
            p.unlink(missing_ok=True)

