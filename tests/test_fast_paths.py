"""The speed-ups of make_cam, train_cam and make_pseudo change no number: CAMs equal to the
plain full computation (bit for bit where the arithmetic is the same, 1e-5 where only its
order changes), training unchanged by the heap setting, pseudo masks pixel-identical to
the reference procedure's loop; VOC-sized synthetic images leave the square default as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.cam.files import cam_path, load_cam
from wsss.cam.inference import multiscale_cam, normalize_cams
from wsss.cam.make import make_cams
from wsss.cam.training import build_cam_model, load_cam_model
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def r18(tiny_cfg):
    cfg = tiny_cfg(**{"cam.scales": [1.0, 0.5, 1.5]})
    torch.manual_seed(0)
    save_checkpoint(cfg.cam.checkpoint, {"model": build_cam_model(cfg).state_dict()})
    return cfg, load_cam_model(cfg, cfg.cam.checkpoint)


@pytest.mark.parametrize("flip", [True, False])
def test_kept_classes_only_equal_the_full_maps_bit_for_bit(r18, flip):
    """Upsampling only an image's classes (and none for an image without any) gives exactly
    the maps the all-class computation gives for them, high-res and strided."""
    _, model = r18
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 3, 40, 56, generator=g), torch.randn(2, 3, 20, 28, generator=g)]
    keys = [torch.tensor([0, 2]), torch.tensor([], dtype=torch.long)]
    with torch.inference_mode():
        full, full_st = multiscale_cam(model, inputs, (40, 56), flip=flip, strided_stride=4)
        kept, kept_st = multiscale_cam(model, inputs, (40, 56), flip=flip, strided_stride=4, keys=keys)
    for n, k in enumerate(keys):
        assert torch.equal(kept[n], full[n, k]) and torch.equal(kept_st[n], full_st[n, k])
        assert torch.equal(normalize_cams(kept[n]), normalize_cams(full[n, k]))
    assert kept[1].shape == (0, 40, 56) and kept_st[1].shape == (0, 10, 14)


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

    finals = []
    for tag in ("retained", "plain"):
        if tag == "plain":
            monkeypatch.setattr(parallel, "_glibc", lambda: None)
        cfg = tiny_cfg(**{"train.max_steps": 2, "runtime.deterministic": True}, work_dir=tmp_path / tag)
        torch.manual_seed(0)
        finals.append(load_checkpoint(train_cam(cfg))["model"])
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


def test_channels_last_make_cam_within_1e5(r18, tmp_path):
    """channels_last (runtime.channels_last, opt-in) reorders the convolutions' arithmetic:
    its CAM files stay within 1e-5 of the standard layout's at these sizes."""
    cfg, model = r18
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "nchw")
    cfg.runtime.channels_last = True
    cl = load_cam_model(cfg, cfg.cam.checkpoint).to(memory_format=torch.channels_last)
    make_cams(cfg, cl, torch.device("cpu"), split="val", out_dir=tmp_path / "cl")
    for p in sorted((tmp_path / "nchw").glob("*.npz")):
        a, b = load_cam(p), load_cam(tmp_path / "cl" / p.name)
        np.testing.assert_allclose(b["high_res"], a["high_res"], atol=1e-5, rtol=0)


def test_reference_loop_make_cam_equals_ours(r18, tmp_path):
    """The benchmark's baseline (the reference's make_cam as a plain loop) computes our CAM
    files: the same keys, high-res and strided maps within 1e-5."""
    from tools.reference_loops import load_cam_npy, make_cam

    cfg, model = r18
    cfg.cam.save_strided = True
    ids = VOCLayout(cfg.data.root).read_split("val")[:3]
    labels = ImageLabels.load(cfg.data.label_file)
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "ours")
    make_cam(model, cfg.data.root, ids, {i: labels.multi_hot(i) for i in ids}, tmp_path / "ref", scales=cfg.cam.scales)
    for i in ids:
        ours, ref = load_cam(cam_path(tmp_path / "ours", i)), load_cam_npy(tmp_path / "ref" / f"{i}.npz")
        assert np.array_equal(ours["keys"], ref["keys"])
        np.testing.assert_allclose(ours["high_res"], ref["high_res"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(ours["strided"], ref["cam"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_make_pseudo_equals_the_reference_loop(r18, tmp_path, workers):
    """Our make_pseudo (shared pairwise terms, pool started once, one image per task, the
    retained heap) writes the masks of the reference's procedure (two CRFs of their own per
    image, a plain pool over the ids), pixel for pixel."""
    from wsss.fileio import read_mask
    from wsss.pseudo.make import make_pseudo_masks
    from tools.reference_loops import make_pseudo

    cfg, model = r18
    cfg.pseudo.crf_params.reference_size = 0  # the reference's CRF: kernels in pixels as given (VOC's configs)
    make_cams(cfg, model, torch.device("cpu"), split="val")
    ids = VOCLayout(cfg.data.root).read_split("val")
    ref_cams = tmp_path / "ref_cams"
    ref_cams.mkdir()
    for i in ids:
        d = load_cam(cam_path(cfg.cam.out_dir, i))
        np.savez(ref_cams / f"{i}.npz", keys=d["keys"], high_res=d["high_res"])
    make_pseudo_masks(cfg, split="val", out_dir=cfg.work_dir + "/pseudo_ours", workers=workers)
    make_pseudo(cfg.data.root, ids, ref_cams, tmp_path / "ref", workers=workers)
    for i in ids:
        ours = read_mask(f"{cfg.work_dir}/pseudo_ours/{i}.png")
        assert np.array_equal(ours, read_mask(tmp_path / "ref" / f"{i}.png")), i
        assert (ours == 255).any() or (ours > 0).any()  # not trivially empty


def test_voc_sizes_and_the_square_default(tmp_path):
    from wsss.data.synthetic import class_styles, generate_synthetic_voc, image_sizes, render_scene
    from wsss.fileio import read_image

    assert image_sizes(3, 0, 128) == [(128, 128)] * 3
    # the square default draws the scene it drew before sizes were a parameter
    a = render_scene(np.random.default_rng(5), 64, class_styles(3))
    b = render_scene(np.random.default_rng(5), 64, class_styles(3), hw=(64, 64))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    sizes = image_sizes(200, 0, 128, voc_sizes=True)
    assert all(max(s) == 500 for s in sizes) and sizes.count((375, 500)) > 50
    summary = generate_synthetic_voc(tmp_path / "V", seed=1, num_train=3, num_aug=0, num_val=2, num_test=1, num_classes=3,
                                     width_range=[90, 120], height_range=[60, 80], write_coco=True)
    L = VOCLayout(tmp_path / "V")
    for image_id in L.read_split("train") + L.read_split("val"):
        h, w = read_image(L.image(image_id)).shape[:2]
        assert 60 <= h <= 80 and 90 <= w <= 120
        xml = (tmp_path / "V" / "Annotations" / f"{image_id}.xml").read_text()
        assert f"<width>{w}</width><height>{h}</height>" in xml
    assert summary["image_size"] == "varied"


@pytest.mark.slow
def test_reference_benchmark_runs_and_checks_the_same_work(tmp_path):
    """scripts/benchmark_reference.py's machinery on a tiny setting (ResNet-18, one make_pseudo
    pair, the profiles): every child process runs, the two sides' masks are pixel-identical,
    the profiles find convolutions and the CRF parts, and the report renders. No speed is
    asserted."""
    from tools.benchmark_reference import Settings, markdown, run_all
    from wsss.data.synthetic import generate_synthetic_voc

    # as prepare() would make it, with the 4 images this setting needs instead of its default 64
    generate_synthetic_voc(tmp_path / "voc" / "VOC2012", num_train=4, num_aug=0, num_val=1, num_test=1, num_classes=20,
                           voc_sizes=True)
    s = Settings(data_root=str(tmp_path / "voc" / "VOC2012"), out=str(tmp_path / "out"), backbone="resnet18",
                 stages=["make_pseudo"], repeats=1, cam_images=1, scales=[1.0], train_images=4, train_batch=4,
                 train_crop=128, pseudo_images=2, pseudo_workers=[1], scaling=False, profile=True)
    res = run_all(s)
    mp = res["make_pseudo"]["workers_1"]
    assert mp["masks"] == {"files": 2, "identical": 2, "differing_ids": []}
    assert mp["ratio"] > 0 and mp["pairs"][0]["ref"]["wall_s"] > 0
    for stage in ("make_cam", "train_cam"):
        prof = res["profile"][stage]
        assert prof["ours"]["convolution_s"] > 0 and prof["ref"]["convolution_s"] > 0 and prof["conv_bound_ratio"] > 0
    parts = res["profile"]["make_pseudo"]["s_per_image"]
    assert parts["unary + 2 inferences"] > 0 and parts["pairwise terms (lattices)"] > 0
    md = markdown(res)
    assert "2 of 2 pixel-identical" in md and "train_cam under the profiler" in md
