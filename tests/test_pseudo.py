import numpy as np
import pytest
import torch

from wsss.cam.make import make_cams
from wsss.config import CRFConfig
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.voc import VOCLayout
from wsss.pseudo.crf import crf_labels
from wsss.pseudo.make import make_pseudo_masks
from wsss.pseudo.refine import cams_to_pseudo


def _hand_made():
    """A 40x60 image in three flat vertical bands and CAMs for keys [0, 2]."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :20] = (200, 40, 40)
    img[:, 20:40] = (40, 200, 40)
    img[:, 40:] = (40, 40, 200)
    cams = np.zeros((2, 40, 60), np.float32)
    cams[0, :, :20] = 0.9  # class 0 confident -> label 1
    cams[1, :, 20:40] = 0.2  # class 2 between bg (0.05) and fg (0.30) -> uncertain
    cams[1, :, 40:] = 0.01  # nothing -> background
    expected = np.zeros((40, 60), np.uint8)
    expected[:, :20] = 1
    expected[:, 20:40] = 255
    return img, cams, np.array([0, 2]), expected


def test_fg_bg_uncertain_logic_without_crf():
    img, cams, keys, expected = _hand_made()
    mask = cams_to_pseudo(img, cams, keys, 0.30, 0.05, crf=None)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
    # a class above the fg threshold wins over the bg band
    cams2 = cams.copy()
    cams2[1, :, 20:40] = 0.5
    m2 = cams_to_pseudo(img, cams2, keys, 0.30, 0.05, crf=None)
    assert (m2[:, 20:40] == 3).all()


def test_fg_bg_uncertain_logic_with_crf():
    img, cams, keys, expected = _hand_made()
    mask = cams_to_pseudo(img, cams, keys, 0.30, 0.05, crf=CRFConfig())
    np.testing.assert_array_equal(mask, expected)


def test_crf_pulls_labels_to_image_edges():
    """A label map shifted 3 px off the colour edge is pulled back by the bilateral term."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 255
    labels = np.zeros((40, 60), np.int64)
    labels[:, 27:] = 1
    (out,) = crf_labels(img, [labels], 2, CRFConfig())
    assert (out[:, :30] == 0).mean() > 0.95 and (out[:, 30:] == 1).all()


def test_shared_pairwise_equals_independent_crfs():
    rng = np.random.default_rng(0)
    img = (rng.random((30, 45, 3)) * 255).astype(np.uint8)
    maps = [rng.integers(0, 3, (30, 45)) for _ in range(3)]
    shared = crf_labels(img, maps, 3, CRFConfig(), shared=True)
    independent = crf_labels(img, maps, 3, CRFConfig(), shared=False)
    for a, b in zip(shared, independent):
        np.testing.assert_array_equal(a, b)


def test_make_pseudo_writes_palette_pngs_and_skips_finished(tiny_cfg, tmp_path):
    import torch

    from wsss.cam.make import make_cams
    from wsss.cam.training import build_cam_model
    from wsss.fileio import read_mask

    cfg = tiny_cfg()
    torch.manual_seed(0)
    make_cams(cfg, build_cam_model(cfg).eval(), torch.device("cpu"), split="train")
    first = make_pseudo_masks(cfg, split="train")
    assert first["computed"] == 12
    pngs = sorted((tmp_path / "work" / "pseudo").glob("*.png"))
    assert len(pngs) == 12
    for p in pngs:
        m = read_mask(p, cfg.data.num_classes)
        assert m.shape == (64, 64)
    mtimes = [p.stat().st_mtime_ns for p in pngs]
    again = make_pseudo_masks(cfg, split="train")
    assert again["computed"] == 0 and again["skipped"] == 12
    assert mtimes == [p.stat().st_mtime_ns for p in pngs]
    with pytest.raises(Exception, match=r"CAM file not found"):
        make_pseudo_masks(cfg, split="val")


def test_crf_pixel_units_scale_with_the_image_size():
    """With a reference size, the two sxy scale with the image's long side; a 250-px image with
    sxy set for 500 px gives exactly the CRF of sxy halved."""
    import dataclasses

    from wsss.config import CRFConfig
    from wsss.pseudo.crf import crf_labels

    p = CRFConfig(reference_size=500.0)
    assert p.sxy_for(250, 125) == (1.5, 25.0) and p.sxy_for(375, 500) == (3.0, 50.0)
    assert CRFConfig().sxy_for(250, 125) == (3.0, 50.0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (125, 250, 3), dtype=np.uint8)
    labels = (rng.random((125, 250)) < 0.4).astype(np.int64)
    scaled = crf_labels(img, [labels], 2, p)[0]
    halved = crf_labels(img, [labels], 2, dataclasses.replace(CRFConfig(), gauss_sxy=1.5, bilateral_sxy=25.0))[0]
    as_given = crf_labels(img, [labels], 2, CRFConfig())[0]
    assert np.array_equal(scaled, halved) and not np.array_equal(scaled, as_given)


@pytest.mark.parametrize("workers", [0, 2])
def test_make_pseudo_equals_the_reference_loop(r18, tmp_path, workers):
    """Our make_pseudo (shared pairwise terms, pool started once, one image per task, the
    retained heap) writes the masks of the reference's procedure (two CRFs of their own per
    image, a plain pool over the ids), pixel for pixel."""
    from tools.reference_loops import make_pseudo
    from wsss.fileio import read_mask

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


def test_the_torch_crf_backend_makes_the_same_pseudo_masks(r18, tmp_path):
    """pseudo.crf_params.backend=torch (wsss.pseudo.crf_torch) writes pydensecrf's masks pixel
    for pixel on the CPU; auto picks torch on CUDA only; the backend is no key of any record."""
    from wsss.fileio import read_mask
    from wsss.pseudo.crf import backend
    from wsss.records import is_harmless

    cfg, model = r18
    make_cams(cfg, model, torch.device("cpu"), split="val")
    ids = VOCLayout(cfg.data.root).read_split("val")
    make_pseudo_masks(cfg, split="val", out_dir=tmp_path / "c", workers=0)
    cfg.pseudo.crf_params.backend = "torch"
    make_pseudo_masks(cfg, split="val", out_dir=tmp_path / "t", workers=2)
    for i in ids:
        assert np.array_equal(read_mask(tmp_path / "c" / f"{i}.png"), read_mask(tmp_path / "t" / f"{i}.png")), i
    auto = CRFConfig()
    assert backend(auto, torch.device("cuda", 0)) == "torch" and backend(auto, torch.device("cpu")) == "pydensecrf"
    assert is_harmless("pseudo.crf_params.backend") and is_harmless("seg.crf_params.backend")
