"""What each output in a work_dir was made from, checked before a stage runs or a number is reported.

Every producing stage writes a record beside its output before it writes the output:

    checkpoints/made_by.json        train_cam    its config keys
    <cam.out_dir>/made_by.json      make_cam     the weights' SHA-256 and every inference setting
    <pseudo.out_dir>/made_by.json   make_pseudo  its keys + the CAMs' record
    seg/checkpoints/made_by.json    train_seg    its keys + the masks' record (+ the CAM weights)

Evaluation stages keep theirs in their metrics JSON, run_pipeline in its markers. A
record holds the keys of :mod:`wsss.fingerprint` for its stage and the records of the
upstream outputs it read (``inputs``), so a change anywhere upstream reaches every stage
below. make_cam's record holds the weights' SHA-256 instead of train_cam's record: the
weights are what CAMs are made of (and training itself makes CAMs of its final weights
in some methods, before train_cam's work is done).

:func:`expected` is the record a stage's output must have under a config; on the way it
checks every upstream output the stage reads and raises
:class:`~wsss.fingerprint.StaleOutputError` for the first that was made under another
config. :func:`begin` is what a stage calls first: the work_dir lock, those checks, the
refusal (or, when asked to redo, the removal of the stale output), then the record.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wsss.config import Config, ConfigError
from wsss.fileio import atomic_write_json, read_json
from wsss.fileio import file_sha256 as sha256_of_file
from wsss.fingerprint import EVAL_STAGES, StaleOutputError, cam_settings, changed, digest, method_sections, stage_keys
from wsss.pipeline_config import ALL_STAGES

RECORD = "made_by.json"
WHAT = {"train_cam": "checkpoints", "make_cam": "CAMs", "make_pseudo": "pseudo masks", "train_seg": "DeepLab checkpoints"}


# --------------------------------------------------------------------------
# where each stage writes
# --------------------------------------------------------------------------
def _work(cfg: Config) -> Path:
    return Path(cfg.work_dir)


def cam_ckpt_dir(cfg: Config) -> Path:
    return _work(cfg) / "checkpoints"  # where train_cam writes (wsss.cam.training)


def seg_ckpt_dir(cfg: Config) -> Path:
    return Path(cfg.seg.out_dir) / "checkpoints"  # where train_seg writes (wsss.seg.training)


def record_path(cfg: Config, stage: str) -> Path | None:
    return {"train_cam": cam_ckpt_dir(cfg), "make_cam": Path(cfg.cam.out_dir), "make_pseudo": Path(cfg.pseudo.out_dir),
            "train_seg": seg_ckpt_dir(cfg)}.get(stage, Path()) / RECORD if stage in WHAT else None


def _inside(path: str | Path, folder: Path) -> bool:
    p, f = Path(path).resolve(), folder.resolve()
    return p == f or f in p.parents


def _finished(folder: Path, ext: str) -> list[Path]:
    return [p for p in folder.glob(f"*.{ext}") if not p.name.startswith(".")] if folder.is_dir() else []


def has_outputs(cfg: Config, stage: str) -> bool:
    """Whether ``stage`` left anything a rerun would reuse (a record alone protects nothing)."""
    if stage == "train_cam":
        method_dirs = [_work(cfg) / s for s in method_sections(cfg)]
        return bool(_finished(cam_ckpt_dir(cfg), "pth")) or any(d.is_dir() and any(d.iterdir()) for d in method_dirs)
    if stage == "make_cam":
        return bool(_finished(Path(cfg.cam.out_dir), "npz"))
    if stage == "make_pseudo":
        return bool(_finished(Path(cfg.pseudo.out_dir), "png"))
    if stage == "train_seg":
        return bool(_finished(seg_ckpt_dir(cfg), "pth"))
    return False


def recorded(cfg: Config, stage: str) -> dict | None:
    p = record_path(cfg, stage)
    return read_json(p) if p is not None and p.is_file() else None


# --------------------------------------------------------------------------
# identities of files: weights by content, cached by path, size and mtime
# --------------------------------------------------------------------------
_SHA_CACHE: dict[tuple, str] = {}


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def file_sha256(path: str | Path) -> str:
    """wsss.fileio.file_sha256, computed once per (path, size, mtime) in a process."""
    path = Path(path)
    key = ("file", *_file_key(path))
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of_file(path)
    return _SHA_CACHE[key]


def weights_identity(value: str) -> Any:
    """A weights setting: a name (``IMAGENET1K_V1``, ``none``) as is, a file by its SHA-256
    (moving the file changes nothing, another file changes the fingerprint). A file that the
    stage itself will make (a pretrained start, wsss.pretrain) is ``{"pending": path}``
    until it exists; :func:`same` then takes its SHA-256 for it."""
    if value and Path(value).is_file():
        return file_sha256(value)
    if value and ("/" in value or Path(value).suffix):
        return {"pending": value}
    return value


def same(rec: Any, want: Any) -> bool:
    """Whether a record matches what is expected now (wsss.fingerprint.diff's rules; a weights
    file recorded as pending matches the file made since)."""
    if rec is None or want is None:
        return rec is want
    return not changed(_settled(rec, want), want)


def _settled(rec: Any, want: Any) -> Any:
    if isinstance(rec, dict) and set(rec) == {"pending"} and isinstance(want, str):
        p = Path(rec["pending"])
        return want if p.is_file() and file_sha256(p) == want else rec
    if isinstance(rec, dict) and isinstance(want, dict):
        return {k: _settled(v, want[k]) if k in want else v for k, v in rec.items()}
    return rec


def cam_weights_sha256(cfg: Config) -> str | None:
    """SHA-256 of the CAM model's tensors loaded from cam.checkpoint (what make_cam's record holds)."""
    ckpt = Path(cfg.cam.checkpoint)
    if not ckpt.is_file():
        return None
    key = ("cam", *_file_key(ckpt), digest(cam_settings(cfg)))
    if key not in _SHA_CACHE:
        from wsss.cam.make import state_sha256
        from wsss.cam.training import load_cam_model

        _SHA_CACHE[key] = state_sha256(load_cam_model(cfg, ckpt))
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------
# the record each stage's output must have under a config
# --------------------------------------------------------------------------
def _stale(stage: str, rec: dict | None, want: dict, cfg: Config, note: str = "") -> StaleOutputError:
    return StaleOutputError(stage, str(record_path(cfg, stage)), changed(_settled(rec, want), want), WHAT[stage], note=note)


def train_cam_record(cfg: Config) -> dict:
    return {"stage": "train_cam", "keys": {**stage_keys(cfg, "train_cam"), "model.weights": weights_identity(cfg.model.weights),
                                           "train.init_checkpoint": weights_identity(cfg.train.init_checkpoint)}}


def _legacy_train_cam(cfg: Config) -> dict | None:
    """Checkpoints from before records were written: the config saved inside them."""
    from wsss.config import config_from_dict
    from wsss.engine.checkpoint import CheckpointError, load_checkpoint

    d = cam_ckpt_dir(cfg)
    for p in [d / "final.pth", d / "last.pth", *sorted(_finished(d, "pth"))]:
        if p.is_file():
            try:
                stored = load_checkpoint(p).get("config")
                return train_cam_record(config_from_dict(stored)) if stored else None
            except (CheckpointError, ConfigError, AttributeError, TypeError):
                return None
    return None


def check_train_cam(cfg: Config) -> None:
    """When cam.checkpoint is this work_dir's own training output, it was trained under this config."""
    if not _inside(cfg.cam.checkpoint, cam_ckpt_dir(cfg)):
        return  # weights from elsewhere: their SHA-256 is their identity
    want = train_cam_record(cfg)
    rec = recorded(cfg, "train_cam")
    if rec is None and has_outputs(cfg, "train_cam"):
        rec = _legacy_train_cam(cfg)
        if rec is None:
            raise _stale("train_cam", None, want, cfg, note="no made_by.json and no readable config in the checkpoints")
    if rec is not None and not same(rec, want) and has_outputs(cfg, "train_cam"):
        raise _stale("train_cam", rec, want, cfg)


def cam_record(cfg: Config) -> dict | None:
    """make_cam's record for cam.checkpoint's weights under this config (None without weights)."""
    check_train_cam(cfg)
    sha = cam_weights_sha256(cfg)
    return None if sha is None else json.loads(json.dumps({"weights_sha256": sha, **cam_settings(cfg)}))


def _cams_input(cfg: Config, cam_dir: str) -> dict:
    """The record of the CAM folder a stage reads, checked when it is this experiment's."""
    rec = read_json(Path(cam_dir) / RECORD) if (Path(cam_dir) / RECORD).is_file() else None
    if Path(cam_dir).resolve() != Path(cfg.cam.out_dir).resolve():
        return rec or {"cam_dir": str(cam_dir)}  # a folder from elsewhere: its own record is its identity
    want = cam_record(cfg)
    if want is None:
        # the weights are gone (deleted to save space): every setting but them must match
        want = {**(rec or {}), **json.loads(json.dumps(cam_settings(cfg)))}
        if rec is not None:
            want["weights_sha256"] = rec.get("weights_sha256")
    if rec is None:
        if has_outputs(cfg, "make_cam"):
            raise _stale("make_cam", None, want, cfg, note="no made_by.json beside them")
        return want
    if not same(rec, want) and has_outputs(cfg, "make_cam"):
        raise _stale("make_cam", rec, want, cfg)
    return want


def _checked(cfg: Config, stage: str) -> dict:
    """A producing stage's record, which must match what the config expects of it."""
    want = expected(cfg, stage)
    rec = recorded(cfg, stage)
    if rec is None:
        if has_outputs(cfg, stage):
            raise _stale(stage, None, want, cfg, note="no made_by.json beside them")
        return want
    if not same(rec, want) and has_outputs(cfg, stage):
        raise _stale(stage, rec, want, cfg)
    return want


def _masks_input(cfg: Config) -> dict:
    s = cfg.seg
    mask_dir = Path(s.mask_dir)
    if not mask_dir.is_absolute() and len(mask_dir.parts) == 1:  # a bare name lies under data.root (VOCLayout.mask)
        mask_dir = Path(cfg.data.root) / mask_dir
    if mask_dir.resolve() == Path(cfg.pseudo.out_dir).resolve():
        return _checked(cfg, "make_pseudo")
    rec = mask_dir / RECORD
    return read_json(rec) if rec.is_file() else {"mask_dir": s.mask_dir}


def _seg_weights(cfg: Config) -> Any:
    w = cfg.seg.weights
    if w and Path(w).resolve() == Path(cfg.cam.checkpoint).resolve():
        check_train_cam(cfg)
        return {"cam_weights_sha256": cam_weights_sha256(cfg)}  # from_cam: the CAM network's tensors
    return weights_identity(w)


def _seg_input(cfg: Config) -> dict:
    ckpt = Path(cfg.seg.checkpoint)
    if _inside(ckpt, seg_ckpt_dir(cfg)):
        return _checked(cfg, "train_seg")
    return {"seg_checkpoint_sha256": file_sha256(ckpt)} if ckpt.is_file() else {"seg_checkpoint": str(ckpt)}


def expected(cfg: Config, stage: str) -> dict | None:
    """The record ``stage``'s output must have under ``cfg``; raises StaleOutputError for an
    upstream output (one the stage reads) that was made under another config."""
    keys = stage_keys(cfg, stage)
    if stage == "train_cam":
        return train_cam_record(cfg)
    if stage == "make_cam":
        return cam_record(cfg)
    if stage == "eval_cam":
        return {"stage": stage, "keys": keys, "inputs": {"cams": _cams_input(cfg, cfg.eval_cam.cam_dir)}}
    if stage == "make_pseudo":
        return {"stage": stage, "keys": keys, "inputs": {"cams": _cams_input(cfg, cfg.pseudo.cam_dir)}}
    if stage == "eval_pseudo":
        return {"stage": stage, "keys": keys, "inputs": {"pseudo": _checked(cfg, "make_pseudo")}}
    if stage == "train_seg":
        return {"stage": stage, "keys": {**keys, "seg.weights": _seg_weights(cfg)}, "inputs": {"masks": _masks_input(cfg)}}
    if stage == "eval_seg":
        return {"stage": stage, "keys": keys, "inputs": {"seg": _seg_input(cfg)}}
    raise ValueError(f"unknown stage {stage!r}")


def consistent(cfg: Config, stage: str, fingerprint: Any) -> tuple[bool, list]:
    """Whether a stage's stored fingerprint (a marker's) is what ``cfg`` expects now, and what differs."""
    try:
        want = expected(cfg, stage)
    except StaleOutputError as e:
        return False, e.changes
    return want is not None and same(fingerprint, want), changed(fingerprint if isinstance(fingerprint, dict) else {}, want or {})


# --------------------------------------------------------------------------
# what a stage does first
# --------------------------------------------------------------------------
def stamp(cfg: Config, stage: str, fingerprint: Any) -> None:
    """Every metrics JSON written from now on carries this stage's fingerprint (wsss.reporting)."""
    object.__setattr__(cfg, "_provenance", {"stage": stage, "fingerprint": fingerprint,
                                            "fingerprint_sha256": digest(fingerprint)})


def begin(cfg: Config, stage: str, redo: bool = False) -> dict | None:
    """Check what ``stage`` reads and what it would write over; returns its fingerprint.

    The lock is taken first (wsss.stages). Producing stages with a record: the record
    must match, or, with ``redo``, the stale output is removed first; then the new
    record is written before any output. make_cam's record is made_by.json of make_cam
    itself (it needs the model); here only its weights' provenance is checked.
    """
    from wsss.engine.distributed import barrier, is_main

    if stage == "make_cam":
        check_train_cam(cfg)
        stamp(cfg, stage, None)
        return None
    try:
        want = expected(cfg, stage)
    except StaleOutputError as e:
        if stage != "train_seg" or e.stage == "train_seg":
            raise
        # DeepLab is often trained with its own config on another experiment's masks
        raise e.with_also(f"or, to train on these masks as they are, use seg.mask_dir={cfg.seg.mask_dir} "
                          "with another work_dir=DIR") from None
    if stage in EVAL_STAGES:
        stamp(cfg, stage, want)
        return want
    rec = recorded(cfg, stage)
    if stage == "train_cam" and rec is None and has_outputs(cfg, stage) and not redo:
        rec = _legacy_train_cam(cfg)
        if rec is None:
            raise _stale(stage, None, want, cfg, note="no made_by.json and no readable config in the checkpoints")
    training = stage in ("train_cam", "train_seg")
    if redo and (training or (rec is not None and not same(rec, want)) or (rec is None and has_outputs(cfg, stage))):
        # a training redo starts over; a file stage's redo rewrites every file, but old files
        # made under another record go first, so a crash never leaves them under the new one
        if is_main():
            clear_outputs(cfg, stage)
        barrier()
        rec = None
    elif rec is None and has_outputs(cfg, stage):
        raise _stale(stage, None, want, cfg, note="no made_by.json beside them")
    elif rec is not None and not same(rec, want) and has_outputs(cfg, stage):
        raise _stale(stage, rec, want, cfg)
    if is_main() and rec != want:
        atomic_write_json(record_path(cfg, stage), want)
    barrier()
    stamp(cfg, stage, want)
    return want


def settle(cfg: Config, stage: str) -> None:
    """After a training stage: its record with the files it made itself (a pretrained start)
    filled in by content, so later stages compare like with like."""
    from wsss.engine.distributed import is_main

    want, rec = expected(cfg, stage), recorded(cfg, stage)
    if is_main() and rec != want and same(rec, want):
        atomic_write_json(record_path(cfg, stage), want)


# --------------------------------------------------------------------------
# removing a stage's outputs (redo)
# --------------------------------------------------------------------------
def _protected(cfg: Config) -> list[Path]:
    """Inputs that may lie inside work_dir and must survive any redo."""
    paths = [cfg.data.root, cfg.data.label_file, cfg.model.weights, cfg.seg.weights, cfg.seg.mask_dir,
             cfg.eval_cam.cam_dir, cfg.pseudo.cam_dir, cfg.cam.checkpoint, cfg.seg.checkpoint]
    ours = [cam_ckpt_dir(cfg), seg_ckpt_dir(cfg), Path(cfg.cam.out_dir), Path(cfg.pseudo.out_dir)]  # stage outputs
    return [Path(p) for p in paths
            if p and p != "none" and Path(p).exists() and not any(_inside(p, d) for d in ours)]


def _discard_dir(cfg: Config, folder: Path) -> None:
    """Remove a folder that only this stage writes: renamed away in one step, then deleted,
    so a crash leaves either the whole old folder or none of it."""
    work = _work(cfg).resolve()
    if not folder.exists():
        return
    f = folder.resolve()
    if f == work or work not in f.parents:
        raise ConfigError(f"{folder}: not a folder inside work_dir {cfg.work_dir}; not removed")
    keep = [p for p in _protected(cfg) if _inside(p, f)]
    if keep:
        raise ConfigError(f"{folder}: holds {keep[0]}, an input of this config; move it out of the work_dir to redo this stage")
    trash = work / f".discarded-{os.getpid()}-{folder.name}"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(f, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _discard_files(folder: Path, patterns: list[str]) -> None:
    """Remove a stage's files from a folder it may share; its record goes last."""
    if not folder.is_dir():
        return
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.is_file():
                p.unlink(missing_ok=True)
    for p in folder.glob(".*.tmp*"):
        p.unlink(missing_ok=True)
    (folder / RECORD).unlink(missing_ok=True)


def _discard_metrics(cfg: Config, names: list[str]) -> None:
    m = _work(cfg) / "metrics"
    for pattern in names:
        for p in m.glob(pattern):
            p.unlink(missing_ok=True)


def clear_outputs(cfg: Config, stage: str) -> None:
    """Remove what ``stage`` wrote in this work_dir (only that: inputs and other stages' outputs stay)."""
    work = _work(cfg)
    for leftover in work.glob(".discarded-*"):  # from a redo that was killed while deleting
        shutil.rmtree(leftover, ignore_errors=True)
    if stage == "train_cam":
        # a method's training writes beside the checkpoints into <work_dir>/<its section>/
        # and metrics/<its section>_*: those go with the checkpoints
        for d in [cam_ckpt_dir(cfg), work / "tb", *[work / s for s in method_sections(cfg)]]:
            _discard_dir(cfg, d)
        phases = [p.name for p in (work / "metrics").glob("train_*.json") if p.name != "train_deeplab.json"]  # train_seg's
        _discard_metrics(cfg, phases + [f"{s}_*" for s in method_sections(cfg)])
    elif stage == "make_cam":
        _discard_files(Path(cfg.cam.out_dir), ["*.npz"])
        _discard_metrics(cfg, ["make_cam.*"])
    elif stage == "eval_cam":
        _discard_metrics(cfg, ["cam_eval.*"])
    elif stage == "make_pseudo":
        _discard_files(Path(cfg.pseudo.out_dir), ["*.png"])
        _discard_metrics(cfg, ["make_pseudo.*"])
    elif stage == "eval_pseudo":
        _discard_metrics(cfg, ["pseudo_eval.*"])
    elif stage == "train_seg":
        for d in [seg_ckpt_dir(cfg), work / "tb_seg"]:
            _discard_dir(cfg, d)
        _discard_metrics(cfg, ["train_deeplab.json"])
    elif stage == "eval_seg":
        for d in [Path(cfg.seg.out_dir) / "val_pred", Path(cfg.seg.out_dir) / "results"]:
            _discard_dir(cfg, d)
        _discard_metrics(cfg, ["seg_eval.*"])


def clear_from(cfg: Config, stage: str) -> list[str]:
    """Remove the outputs and markers of ``stage`` and of every stage after it (and the summary)."""
    later = ALL_STAGES[ALL_STAGES.index(stage):]
    work = _work(cfg)
    for s in later:
        (work / "pipeline" / f"{s}.json").unlink(missing_ok=True)  # first: no marker claims a half-removed output
    _discard_metrics(cfg, ["summary.*"])
    _discard_dir(cfg, work / "vis")
    for s in later:
        clear_outputs(cfg, s)
    return later
