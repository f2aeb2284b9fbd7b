"""The retained heap (wsss.parallel.retain_freed_memory: freed activations stay in the heap for
the next image or step) changes no number: CAM files and trained weights are identical with it
and without it (as on a platform without glibc)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.cam.make import make_cams
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint
from PIL import Image


def test_retained_heap_changes_no_value(r18, monkeypatch):
    """The heap setting (retain_freed_memory) is a no-op for the numbers: CAM files are
    identical with it and without it (as on a platform without glibc)."""
    import wsss.parallel as parallel

    cfg, model = r18
    dev = torch.device("cpu")
    make_cams(cfg, model, dev, split="val", out_dir=cfg.work_dir + "/kept")
    monkeypatch.setattr(parallel, "_glibc", lambda: None)
    make_cams(cfg, model, dev, split="val", out_dir=cfg.work_dir + "/plain")
    for image_id in VOCLayout(cfg.data.root).read_split("val"):
        a = load_cam(cam_path(cfg.work_dir + "/kept", image_id))
        b = load_cam(cam_path(cfg.work_dir + "/plain", image_id))
        assert np.array_equal(a["high_res"], b["high_res"]) and np.array_equal(a["keys"], b["keys"])


def test_retain_freed_memory_nests_and_restores():
    import wsss.parallel as parallel

    if parallel._glibc() is None:
        pytest.skip("glibc only")
    with parallel.retain_freed_memory():
        with parallel.retain_freed_memory():
            assert parallel._retaining == 2
        assert parallel._retaining == 1  # the inner exit leaves the outer setting alone
        x = torch.ones(64, 1024, 1024)  # 256 MiB from the heap, not an mmap
        assert float(x.sum()) == 64 * 1024 * 1024
        del x
    assert parallel._retaining == 0


def test_training_is_unchanged_by_the_heap_setting(tiny_cfg, tmp_path, monkeypatch):
    import wsss.parallel as parallel
    from wsss.cam.training import train_cam
    from wsss.engine.trainer import setup_runtime

    finals = []
    for tag in ("retained", "plain"):
        if tag == "plain":
            monkeypatch.setattr(parallel, "_glibc", lambda: None)
        cfg = tiny_cfg(**{"train.max_steps": 2, "runtime.deterministic": True}, work_dir=tmp_path / tag)
        torch.manual_seed(0)
        finals.append(load_checkpoint(train_cam(cfg, setup_runtime(cfg)))["model"])
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_release_retained_memory_gives_the_free_pages_back():
    """Inside retain_freed_memory a freed block stays resident (the next image reuses it
    without page faults); release_retained_memory (make_cam, when the image size changes)
    gives its pages back."""
    import wsss.parallel as parallel

    if parallel._glibc() is None:
        pytest.skip("glibc only")
    with parallel.retain_freed_memory():
        x = torch.ones(64, 1024, 1024)  # 256 MiB from the heap
        before = _rss_mib()
        del x
        kept = _rss_mib()
        parallel.release_retained_memory()
        released = _rss_mib()
    assert kept > before - 64  # freed, still resident
    assert released < kept - 192  # given back


def test_make_cam_releases_the_heap_when_the_image_size_changes(tiny_cfg, tmp_path, monkeypatch):
    """make_cam on the CPU runs the images in order of size and gives the heap's free pages
    back at every change of size (and only then): once per size, and the heap holds what one
    image size needs."""
    import wsss.cam.make as make
    from wsss.cam.training import build_cam_model
    from wsss.data.synthetic import generate_synthetic_voc

    root = tmp_path / "voc" / "VOC2012"
    generate_synthetic_voc(root, seed=0, num_train=1, num_aug=0, num_val=6, num_test=1, num_classes=20, voc_sizes=True)
    cfg = tiny_cfg(**{"data.root": str(root), "data.num_classes": 20, "cam.scales": [0.25], "cam.workers": 0})
    calls = []
    monkeypatch.setattr(make, "release_retained_memory", lambda: calls.append(1))
    torch.manual_seed(0)
    make_cams(cfg, build_cam_model(cfg, pretrained=False).eval(), torch.device("cpu"), split="val",
              out_dir=tmp_path / "cams", progress=False)
    sizes = [Image.open(VOCLayout(root).image(i)).size for i in VOCLayout(root).read_split("val")]
    changes = sum(a != b for a, b in zip(sizes, sizes[1:]))
    assert changes > len(set(sizes)) - 1 > 0  # the split's order changes size more often than there are sizes
    assert len(calls) == len(set(sizes)) - 1
