"""Provenance (wsss.records): every config key is either one a stage's output depends on or declared
harmless; make_cam refuses a finished folder when any key that changes a CAM value flips and
reuses it when a harmless one does; the stage scripts refuse outputs made under another
config, with one line naming the key and the ways out; train_cam -> make_pseudo works."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, run_script_here, tiny_overrides
from wsss.cam.make import make_cams
from wsss.cam.training import build_cam_model
from wsss.config import load_config, to_dict
from wsss import records
from wsss.records import CONTENT_KEYS, StaleOutputError, flatten, is_harmless, method_sections
from wsss.stages import STAGES as TABLE

STAGES = list(TABLE)


def stage_keys(cfg, stage: str) -> dict:
    return records.stage_keys(cfg, TABLE[stage])


def _set(cfg, key: str, value) -> None:
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = getattr(node, p)
    setattr(node, last, value)


def _get(cfg, key: str):
    node = cfg
    for p in key.split("."):
        node = getattr(node, p)
    return node


def test_every_key_is_recorded_or_harmless(tiny_cfg):
    """A key added to the schema later lands in a stage's record (by its section) or in
    the harmless list; no key is both."""
    cfg = tiny_cfg("gslm/ppl_gslm_r18_synthetic.yaml")
    covered = {k for st in STAGES for k in stage_keys(cfg, st)}
    for key in flatten(to_dict(cfg)):
        if is_harmless(key):
            assert key not in covered, f"{key} is harmless but recorded"
        else:
            assert key in covered or key in CONTENT_KEYS, f"{key} is neither recorded nor declared harmless"
    for key in ["runtime.threads", "runtime.progress", "runtime.tensorboard", "train.workers", "cam.workers", "pseudo.workers",
                "seg.workers", "train.log_interval", "train.ckpt_interval", "train.vis_interval", "seg.log_interval",
                "data.root", "data.label_file", "work_dir", "exp_name", "cam.out_dir", "cam.redo", "pseudo.redo",
                "pipeline.stages", "runtime.channels_last", "runtime.compile", "runtime.compile_backend", "runtime.device"]:
        assert is_harmless(key) and key not in covered, key
    # method sections are found through the registry, not by name, and belong to the CAM model
    assert {"ppl", "gslm"} <= set(method_sections(cfg))
    for st in ("train_cam", "make_cam"):
        keys = stage_keys(cfg, st)
        assert "ppl.cam_source" in keys and "gslm.beta" in keys and "model.output_stride" in keys, st


@pytest.mark.parametrize("key,value,stages", [
    ("train.lr", 0.07, {"train_cam"}),
    ("seed", 5, {"train_cam", "train_irn", "train_seg"}),
    ("ppl.cam_source", "full", {"train_cam", "make_cam"}),
    ("cam.scales", [1.0], {"make_cam"}),
    ("runtime.amp", "bf16", {"train_cam", "make_cam", "train_irn", "make_irn_labels", "train_seg"}),
    ("irn.beta", 8.0, {"make_irn_labels"}),
    ("irn.radius", 7, {"train_irn"}),
    ("irn.boundary", "zeros", {"make_irn_labels"}),
    ("eval_cam.threshold_step", 0.02, {"eval_cam"}),
    ("pseudo.crf_params.gauss_compat", 3.0, {"eval_cam", "make_pseudo"}),
    ("pseudo.fg_thres", 0.4, {"make_pseudo"}),
    ("pseudo.eval_split", "val", {"eval_pseudo"}),
    ("seg.lr", 0.01, {"train_seg"}),
    ("seg.crf", True, {"eval_seg"}),
    ("seg.crf_params.bilateral_sxy", 80.0, {"eval_seg"}),
    ("data.num_classes", 4, set(STAGES) - {"make_cam"}),
])
def test_a_key_changes_the_stages_it_reaches(tiny_cfg, key, value, stages):
    cfg = tiny_cfg("ppl/ppl_progressive_r18_synthetic.yaml")
    before = {st: stage_keys(cfg, st) for st in STAGES}
    _set(cfg, key, value)
    assert {st for st in STAGES if stage_keys(cfg, st) != before[st]} == stages


def test_extra_phases_make_train_cam_depend_on_the_stages_they_run(tiny_cfg):
    """GSLM's rounds make CAMs and pseudo masks while training: train_cam then depends on those keys."""
    cfg = tiny_cfg("gslm/gslm_r18_synthetic.yaml", **{"gslm.rounds": 0})
    assert "cam.scales" not in stage_keys(cfg, "train_cam")
    cfg.gslm.rounds = 2
    keys = stage_keys(cfg, "train_cam")
    assert {"cam.scales", "pseudo.fg_thres", "eval_cam.split"} <= set(keys) and "cam.workers" not in keys


# make_cam: a refusal for every key that changes a CAM value, reuse for every harmless one
VALUE_KEYS = [
    ("cam.scales", [1.0]), ("cam.flip", False), ("cam.resize_mode", "nearest"), ("cam.dtype", "float16"),
    ("cam.save_strided", False), ("cam.strided_stride", 8), ("train.aug.mean", [0.5, 0.5, 0.5]),
    ("train.aug.std", [0.5, 0.5, 0.5]), ("runtime.amp", "bf16"), ("model.output_stride", 8), ("model.stride_mode", "dilation"),
    ("model.backbone", "resnet34"), ("ppl.cam_source", "full"), ("ppl.grids", [4]), ("ppl.split_points", [2]),
    ("ppl.pad_mode", "zeros"), ("gslm.beta", 3.0),
]
HARMLESS_KEYS = [
    ("runtime.threads", 1), ("cam.workers", 1), ("cam.images_per_batch", 1), ("runtime.progress", True),
    ("runtime.channels_last", True), ("runtime.device", "cpu"), ("model.weights", "IMAGENET1K_V1"), ("cam.checkpoint", "/elsewhere.pth"),
    ("train.lr", 0.01), ("train.epochs", 9), ("train.workers", 3), ("seed", 7), ("exp_name", "renamed"), ("cam.split", "val"),
    ("pseudo.fg_thres", 0.4), ("eval_cam.threshold_step", 0.02), ("seg.lr", 0.5), ("pipeline.visualize_ids", 1),
]


def test_make_cam_refuses_every_value_key_and_reuses_under_every_harmless_one(tiny_cfg, tiny_root, tmp_path):
    # (gslm.rounds=0: a gslm section that changes nothing, so its keys can be flipped below)
    cfg = tiny_cfg("ppl/ppl_explicit_r18_synthetic.yaml", **{"ppl.split_points": [3], "ppl.grids": [2], "gslm.rounds": 0})
    torch.manual_seed(0)
    model = build_cam_model(cfg).eval()
    dev = torch.device("cpu")
    out = tmp_path / "cams"
    first = make_cams(cfg, model, dev, split="val", out_dir=out)
    assert first["computed_here"] == 8
    files = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}

    for key, value in VALUE_KEYS:
        changed = copy.deepcopy(cfg)
        old = _get(changed, key)
        _set(changed, key, value)
        with pytest.raises(StaleOutputError) as e:
            make_cams(changed, model, dev, split="val", out_dir=out)
        msg = str(e.value)
        assert "\n" not in msg and "set cam.redo=true" in msg and "work_dir=" in msg, msg
        shown = re.escape(f"{key}: ") + ".+" + re.escape(" -> ")
        assert re.search(shown, msg), (key, old, msg)

    # other weights, same settings
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(StaleOutputError, match=r"made with other weights_sha256; set cam\.redo=true"):
        make_cams(cfg, other, dev, split="val", out_dir=out)

    moved = tmp_path / "moved" / "VOC2012"
    shutil.copytree(tiny_root, moved)
    for key, value in HARMLESS_KEYS + [("data.root", str(moved))]:
        same = copy.deepcopy(cfg)
        _set(same, key, value)
        if key == "data.root":
            same.data.label_file = str(moved / "cls_labels.json")
        r = make_cams(same, model, dev, split="val", out_dir=out)
        assert (r["computed_here"], r["skipped_here"]) == (0, 8), key
    assert files == {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}  # nothing rewritten

    # the way out: cam.redo=true removes the old files first, then makes the new ones
    changed = copy.deepcopy(cfg)
    changed.cam.scales = [1.0]
    r = make_cams(changed, model, dev, split="val", out_dir=out, redo=True)
    assert r["computed_here"] == 8
    assert json.loads((out / "made_by.json").read_text())["keys"]["cam.scales"] == [1.0]


def test_cam_files_without_a_record_are_not_adopted(trained_model_cfg, tmp_path):
    cfg, model = trained_model_cfg
    out = tmp_path / "cams"
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=out)
    (out / "made_by.json").unlink()
    with pytest.raises(StaleOutputError, match=r"no made_by\.json beside them"):
        make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=out)


@pytest.fixture
def trained_model_cfg(tiny_cfg):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    return cfg, build_cam_model(cfg).eval()


def test_readme_ablation_error_is_what_run_pipeline_prints():
    """The error the README quotes for its ablation command is the one the code makes."""
    base = CONFIGS / "ppl/ppl_progressive_r50_voc12.yaml"
    a, b = load_config(base), load_config(base, ["ppl.restart_schedule=false", "ppl.cam_source=full"])
    train_cam = TABLE["train_cam"]
    err = records.stale(train_cam, Path(a.work_dir) / "checkpoints" / "made_by.json", records.expected(a, train_cam),
                        records.expected(b, train_cam)).for_pipeline()
    readme = (CONFIGS.parent / "README.md").read_text()
    assert f"config error: {err}" in readme
    assert "ppl.cam_source: concat -> full" in str(err) and "--redo-from train_cam" in str(err)


def _args(root: Path, work: Path, **extra) -> list[str]:
    return ["--config", str(CONFIGS / "cam/cam_r18_synthetic.yaml"), *_overrides(root, work, **extra)]


def _overrides(root: Path, work: Path, **extra) -> list[str]:
    return tiny_overrides(root, work, **{"train.max_steps": 2, "cam.split": "train", "pseudo.split": "train", **extra})


def _stage(name: str, root: Path, work: Path, redo: bool | None = None, **extra):
    """A stage in this process (what the script runs, without its start-up), lock given back after."""
    from wsss.lock import release_all
    from wsss.stages import run

    cfg = load_config(CONFIGS / "cam/cam_r18_synthetic.yaml", _overrides(root, work, **extra))
    try:
        return run(cfg, name, redo=redo)
    finally:
        release_all()


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


@pytest.mark.slow
def test_train_cam_then_make_pseudo_and_refusals_under_another_config(tiny_root, tmp_path, capsys):
    work = tmp_path / "work"
    trained = run_script_here("train_cam.py", *_args(tiny_root, work))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((work / "checkpoints" / "made_by.json").read_text())["keys"]["train.lr"] == 0.1

    # make_pseudo right after train_cam: the CAMs are made first, by make_cam's code and rules
    made = run_script_here("make_pseudo.py", *_args(tiny_root, work))
    assert made.returncode == 0, made.stderr[-2000:]
    out = made.stdout
    assert "12 CAM files of split train are not in" in out and "making them first" in out
    assert "(12 computed on rank 0" in out and "pseudo masks of 12 images" in out
    assert len(list((work / "cams").glob("*.npz"))) == 12 and len(list((work / "pseudo").glob("*.png"))) == 12
    made = json.loads((work / "cams" / "made_by.json").read_text())
    pseudo_eval = json.loads((work / "metrics" / "pseudo_eval.json").read_text())
    assert pseudo_eval["record"]["stage"] == "eval_pseudo"
    assert pseudo_eval["record"]["inputs"]["pseudo"]["inputs"]["cams"] == made
    masks = {p.name: p.stat().st_mtime_ns for p in (work / "pseudo").glob("*.png")}

    # a key of make_pseudo: refused in one line naming it and the ways out; nothing rewritten
    p = run_script_here("make_pseudo.py", *_args(tiny_root, work, **{"pseudo.fg_thres": 0.4}))
    line = _error_line(p)
    assert p.returncode == 2 and "pseudo.fg_thres: 0.3 -> 0.4" in line, line
    assert "set pseudo.redo=true" in line and "--redo-from make_pseudo" in line and "work_dir=DIR" in line
    assert masks == {p.name: p.stat().st_mtime_ns for p in (work / "pseudo").glob("*.png")}
    assert json.loads((work / "metrics" / "pseudo_eval.json").read_text()) == pseudo_eval

    # harmless keys (threads, workers, intervals, the data root's location): reused, nothing computed
    moved = tmp_path / "moved" / "VOC2012"
    shutil.copytree(tiny_root, moved)
    r = _stage("make_pseudo", moved, work, **{"runtime.threads": 1, "pseudo.workers": 1, "train.log_interval": 5,
                                                  "cam.workers": 1, "runtime.progress": True})
    assert r["computed"] == 0 and "making them first" not in capsys.readouterr().out

    # a training key: eval_cam refuses to score CAMs of weights trained under another one,
    # and train_cam refuses to resume or skip
    for name in ("eval_cam", "train_cam"):
        with pytest.raises(StaleOutputError) as e:
            _stage(name, tiny_root, work, **{"train.lr": 0.07})
        assert "checkpoints/made_by.json" in str(e.value) and "train.lr: 0.1 -> 0.07" in str(e.value)
        assert "train_cam.py --no-resume" in str(e.value) and "--redo-from train_cam" in str(e.value)
    assert not (work / "metrics" / "cam_eval.json").exists()
    assert json.loads((work / "checkpoints" / "made_by.json").read_text())["keys"]["train.lr"] == 0.1

    # the per-stage way out
    r = _stage("make_pseudo", tiny_root, work, **{"pseudo.fg_thres": 0.4, "pseudo.redo": True})
    assert r["computed"] == 12
    assert json.loads((work / "pseudo" / "made_by.json").read_text())["keys"]["pseudo.fg_thres"] == 0.4

    # retrained under another key (train_cam.py --no-resume): everything made from the old
    # weights is refused downstream
    _stage("train_cam", tiny_root, work, True, **{"train.lr": 0.07})
    assert json.loads((work / "checkpoints" / "made_by.json").read_text())["keys"]["train.lr"] == 0.07
    with pytest.raises(StaleOutputError, match=r"cams/made_by\.json: the CAMs there were made with other weights_sha256"):
        _stage("make_pseudo", tiny_root, work, **{"train.lr": 0.07, "pseudo.fg_thres": 0.4})
