"""Bad inputs, table-driven: each case runs a real script on a corrupted copy of the tiny
synthetic dataset and expects a one-line error naming the file or key, a non-zero exit,
and nothing half-written."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONFIGS, run_script, run_script_here, tiny_overrides
from wsss.fileio import read_id_list, save_npz, write_palette_png

CAM_CFG = str(CONFIGS / "cam/cam_r18_synthetic.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_root):
    """A tiny experiment with a trained checkpoint and CAMs of the train split."""
    work = tmp_path_factory.mktemp("finished") / "work"
    # the cases run with the same training keys: CAMs of weights trained under other ones are refused
    args = ["--config", CAM_CFG, *tiny_overrides(tiny_root, work, **{"cam.split": "train"})]
    for script in ("train_cam.py", "make_cam.py"):
        proc = run_script_here(script, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return work


@dataclass
class Case:
    name: str
    script: str
    pattern: str  # the error line, a regex
    corrupt: Callable[[Path, Path], dict] = lambda root, work: {}  # returns extra overrides
    exit_code: int = 1
    config: str = CAM_CFG
    must_not_exist: list[str] = field(default_factory=list)  # relative to the work dir
    extra: dict = field(default_factory=dict)


def _first(root: Path, split: str = "train") -> str:
    return read_id_list(root / "ImageSets/Segmentation" / f"{split}.txt")[0]


def corrupt_jpeg(root, work):
    (root / "JPEGImages" / f"{_first(root)}.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (work / "cams" / f"{_first(root)}.npz").unlink()
    return {"cam.workers": 1}  # the error crosses a DataLoader worker


def truncated_png(root, work):
    p = root / "SegmentationClass" / f"{_first(root)}.png"
    p.write_bytes(p.read_bytes()[:60])
    return {}


def mask_values(root, work):
    write_palette_png(root / "SegmentationClass" / f"{_first(root)}.png", np.full((64, 64), 9, np.uint8))
    return {}


def mask_size(root, work):
    write_palette_png(root / "SegmentationClassAug" / f"{_first(root, 'train_aug')}.png", np.zeros((32, 40), np.uint8))
    return {"seg.mask_dir": "SegmentationClassAug", "seg.weights": "none", "seg.workers": 0, "seg.iterations": 2,
            "seg.batch_size": 2}


def id_without_image(root, work):
    (root / "ImageSets/Segmentation/train.txt").write_text("2099_000001\n" + (root / "ImageSets/Segmentation/train.txt").read_text())
    return {"cam.redo": True}


def id_without_label(root, work):
    src = root / "JPEGImages" / f"{_first(root)}.jpg"
    shutil.copy(src, root / "JPEGImages" / "2099_000002.jpg")
    (root / "ImageSets/Segmentation/train.txt").write_text("2099_000002\n")
    return {"cam.redo": True}


def empty_split(root, work):
    (root / "ImageSets/Segmentation/train.txt").write_text("\n")
    return {}


def crafted_id(root, work):
    (root / "ImageSets/Segmentation/train.txt").write_text("../../../escape\n")
    return {"cam.redo": True}


def other_arch_checkpoint(root, work):
    from wsss.models.backbones import ResNetBackbone
    from wsss.models.cam_net import CAMNet

    torch.save({"model": CAMNet(ResNetBackbone("resnet34", weights="none"), 3).state_dict()}, work / "r34.pth")
    return {"cam.checkpoint": str(work / "r34.pth"), "cam.redo": True}


def other_class_count_checkpoint(root, work):
    from wsss.models.backbones import ResNetBackbone
    from wsss.models.cam_net import CAMNet

    torch.save({"model": CAMNet(ResNetBackbone("resnet18", weights="none"), 20).state_dict()}, work / "c20.pth")
    return {"cam.checkpoint": str(work / "c20.pth"), "cam.redo": True}


class Pickled:
    pass


def pickled_checkpoint(root, work):
    torch.save({"model": {}, "evil": Pickled()}, work / "evil.pth")
    return {"cam.checkpoint": str(work / "evil.pth"), "cam.redo": True}


def cam_missing_key(root, work):
    p = work / "cams" / f"{_first(root)}.npz"
    save_npz(p, high_res=np.zeros((1, 64, 64), np.float32))
    return {}


def cam_wrong_shape(root, work):
    p = work / "cams" / f"{_first(root)}.npz"
    save_npz(p, keys=np.array([0], np.int16), high_res=np.zeros((1, 10, 10), np.float32))
    return {}


def cam_pickled(root, work):
    p = work / "cams" / f"{_first(root)}.npz"
    np.savez(p, keys=np.array([{"k": 0}], dtype=object), high_res=np.zeros((1, 64, 64), np.float32))
    return {"pseudo.split": "train"}


def label_file_pickled(root, work):
    np.save(root / "cls_labels.npy", np.array({"x": [0]}, dtype=object), allow_pickle=True)
    return {"data.label_file": str(root / "cls_labels.npy"), "cam.redo": True}


def missing_root(root, work):
    return {"data.root": str(root.parent / "does_not_exist"), "data.dataset": "voc12", "cam.redo": True}


def output_outside_work_dir(root, work):
    return {"cam.out_dir": str(work.parent / "elsewhere")}


def write_cfg(root, work, text):
    p = work / "bad.yaml"
    p.write_text(text)
    return p


CASES = [
    Case("corrupt_jpeg", "make_cam.py", r"error: .*JPEGImages/2007_000000\.jpg: unreadable image", corrupt_jpeg,
         must_not_exist=["cams/2007_000000.npz"]),
    Case("truncated_png_mask", "eval_cam.py", r"error: .*SegmentationClass/2007_000000\.png: unreadable mask", truncated_png,
         must_not_exist=["metrics/cam_eval.json"]),
    Case("mask_values_out_of_range", "eval_cam.py", r"error: .*2007_000000\.png: mask values \[9\] outside \{0\.\.3, 255\}",
         mask_values, must_not_exist=["metrics/cam_eval.json"]),
    Case("image_mask_size_mismatch", "train_seg.py", r"error: .*SegmentationClassAug/\d+_000000\.png: mask size 40x32 differs from image .*\.jpg size 64x64",
         mask_size, config=str(CONFIGS / "seg/deeplabv2_r18_synthetic.yaml"), must_not_exist=["seg/checkpoints/final.pth"]),
    Case("id_without_image", "make_cam.py", r"error: .*2099_000001\.jpg: image file not found \(id '2099_000001' of split train\)",
         id_without_image, extra={"cam.split": "train"}),
    Case("id_without_label", "make_cam.py", r"error: .*cls_labels\.json: id '2099_000002' of split train has no image-level labels",
         id_without_label, extra={"cam.split": "train"}, must_not_exist=["cams/2099_000002.npz"]),
    Case("empty_split", "make_cam.py", r"error: .*train\.txt: split list is empty", empty_split, extra={"cam.split": "train"}),
    Case("crafted_id", "make_cam.py", r"error: invalid image id '\.\./\.\./\.\./escape' in .*train\.txt", crafted_id,
         extra={"cam.split": "train"}),
    Case("checkpoint_other_architecture", "make_cam.py",
         r"error: .*r34\.pth: does not fit this model \(CAMNet\); shape mismatch: backbone\.stage1\.4\.0\.conv1\.weight|missing: .*|unexpected: backbone\.stage1\.4\.2",
         other_arch_checkpoint, extra={"cam.split": "train"}),
    Case("checkpoint_other_class_count", "make_cam.py",
         r"error: .*c20\.pth: does not fit this model \(CAMNet\); shape mismatch: classifier\.weight \(20, 512, 1, 1\) vs \(3, 512, 1, 1\)",
         other_class_count_checkpoint, extra={"cam.split": "train"}),
    Case("checkpoint_needs_pickle", "make_cam.py", r"error: .*evil\.pth: refused or unreadable checkpoint \(UnpicklingError",
         pickled_checkpoint, extra={"cam.split": "train"}),
    Case("cam_file_missing_key", "eval_cam.py", r"error: .*cams/2007_000000\.npz: missing key\(s\) \['keys'\]", cam_missing_key,
         must_not_exist=["metrics/cam_eval.json"]),
    Case("cam_file_wrong_shape", "eval_cam.py", r"error: .*2007_000000\.npz: 'high_res' is 10x10 but the image is 64x64",
         cam_wrong_shape, must_not_exist=["metrics/cam_eval.json"]),
    Case("cam_file_needs_pickle", "make_pseudo.py", r"error: .*2007_000000\.npz: refused: holds pickled objects", cam_pickled,
         must_not_exist=["pseudo/2007_000000.png", "metrics/pseudo_eval.json"]),
    Case("label_file_needs_pickle", "make_cam.py", r"error: .*cls_labels\.npy: refused: label files are JSON", label_file_pickled,
         extra={"cam.split": "train"}),
    Case("data_root_missing", "make_cam.py", r"error: .*does_not_exist: data root does not exist", missing_root,
         extra={"cam.split": "train"}),
    Case("nonfinite_loss", "train_cam.py",
         r"error: non-finite loss term 'cls' at step 0; training stopped; last good checkpoint: none yet",
         extra={"train.aug.std": [0.0, 0.0, 0.0], "train.max_steps": 4}, must_not_exist=["checkpoints/final.pth"]),
    Case("output_outside_work_dir", "make_cam.py", r"config error: cam\.out_dir: .*elsewhere is outside work_dir", output_outside_work_dir,
         exit_code=2),
]


def _prepare(case: Case, tiny_root: Path, finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_root, root)
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    for f in (work / "metrics").glob("*"):
        f.unlink()
    for name in ("final.pth", "cam.pth"):  # a training case starts from scratch
        if case.script == "train_cam.py":
            (work / "checkpoints" / name).unlink(missing_ok=True)
    return root, work


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # nonfinite_loss's zero std, on purpose
def test_bad_input(case: Case, tiny_root, finished, tmp_path):
    root, work = _prepare(case, tiny_root, finished, tmp_path)
    extra = {**case.extra, **case.corrupt(root, work)}
    proc = run_script_here(case.script, "--config", case.config, *tiny_overrides(root, work, **extra))
    err_lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == case.exit_code, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert err_lines, "no error message"
    assert re.search(case.pattern, err_lines[-1]), err_lines[-1]
    assert "Traceback" not in proc.stderr
    for rel in case.must_not_exist:
        assert not (work / rel).exists(), rel
    leftovers = [p for p in list(work.rglob(".*.tmp*")) + list(root.rglob(".*.tmp*"))]
    assert not leftovers
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("name,text,pattern", [
    ("unknown_key", "_base_: {base}\ntrain:\n  lrr: 0.1\n", r"config error: unknown key 'train\.lrr' \(from .*bad\.yaml\)"),
    ("wrong_type", "_base_: {base}\ntrain:\n  momentum: fast\n", r"config error: train\.momentum: expected float, got str 'fast' \(from .*bad\.yaml\)"),
    ("missing_base", "_base_: nowhere.yaml\n", r"config error: config file not found: .*nowhere\.yaml \(named in _base_ of .*bad\.yaml\)"),
    ("circular_base", "_base_: bad.yaml\n", r"config error: circular _base_: .*bad\.yaml -> .*bad\.yaml"),
])
def test_bad_config(name, text, pattern, tiny_root, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text.format(base=CAM_CFG))
    # one case in a child process, as a user runs it; the others in this one (the same wrapper, without the start-up)
    run = (lambda *a: run_script(*a, check=False)) if name == "unknown_key" else run_script_here
    proc = run("train_cam.py", "--config", str(cfg), *tiny_overrides(tiny_root, tmp_path / "work"))
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "work").exists()  # nothing written


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA"])
def test_non_rgb_images_work_end_to_end(mode, tiny_root, finished, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_root, root)
    image_id = _first(root)
    p = root / "JPEGImages" / f"{image_id}.jpg"
    im = Image.open(p).convert(mode)
    if mode == "RGBA":
        im.save(p, format="PNG")  # RGBA has no JPEG form; PIL reads files by content
    else:
        im.save(p, format="JPEG")
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    made = run_script_here("make_cam.py", "--config", CAM_CFG, *tiny_overrides(root, work, **{"cam.split": "train", "cam.redo": True}))
    assert made.returncode == 0, made.stderr[-2000:]
    from wsss.data.cam_files import load_cam

    assert load_cam(work / "cams" / f"{image_id}.npz", (64, 64))["high_res"].shape[1:] == (64, 64)
