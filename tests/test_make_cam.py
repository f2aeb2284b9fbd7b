import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.data.cam_files import cam_path, load_cam
from wsss.cam.inference import multiscale_cam, normalize_cams
from wsss.cam.make import make_cams
from wsss.cam.training import build_cam_model, load_cam_model
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import save_checkpoint
from wsss.fileio import DataError, read_image, save_npz


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _normalised(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1).copy())[None]


def reference_input(img: np.ndarray, s: float, mode: str) -> torch.Tensor:
    """The image at scale ``s`` as the references build it, written from their definitions
    (not with our transforms). bicubic (their CAM files): PIL bicubic on the uint8 image to
    round(side * s), then normalise. nearest (GSLM's evaluation path): the normalised tensor,
    output side floor(side * s), source index floor(dst * in / out) in float32."""
    h, w = img.shape[:2]
    if mode == "bicubic":
        size = (int(np.round(h * s)), int(np.round(w * s)))
        im = img if size == (h, w) else np.asarray(Image.fromarray(img).resize(size[::-1], Image.BICUBIC))
        return _normalised(im)
    x = _normalised(img)
    if s == 1.0:
        return x
    oh, ow = int(np.floor(h * s)), int(np.floor(w * s))
    rows = np.minimum(np.floor(np.arange(oh, dtype=np.float32) * (np.float32(h) / np.float32(oh))), h - 1).astype(int)
    cols = np.minimum(np.floor(np.arange(ow, dtype=np.float32) * (np.float32(w) / np.float32(ow))), w - 1).astype(int)
    return x[:, :, rows][:, :, :, cols]


def straightforward_cam(model, img: np.ndarray, keys, scales, mode: str = "bicubic") -> np.ndarray:
    """make_cam's definition written as a plain loop, the way the references do it: per
    scale, the scaled image and its flip, ReLU CAM, the flip flipped back, each map upsampled
    (bilinear) to the image size, summed; the image's classes kept, each divided by max + 1e-5."""
    h, w = img.shape[:2]
    maps = []
    with torch.no_grad():
        for s in scales:
            x = reference_input(img, s, mode)
            for flip in (False, True):
                xi = x.flip(-1) if flip else x
                cam = F.relu(model(xi)["cam"])
                cam = cam.flip(-1) if flip else cam
                maps.append(F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0])
    total = torch.stack(maps).sum(0)[keys]
    total = total / (total.flatten(1).max(1).values[:, None, None] + 1e-5)
    return total.numpy()


@pytest.fixture
def trained_model(tiny_cfg):
    cfg = tiny_cfg(**{"cam.scales": [1.0, 0.5, 1.5]})
    torch.manual_seed(0)
    model = build_cam_model(cfg)
    save_checkpoint(cfg.cam.checkpoint, {"model": model.state_dict()})
    return cfg, load_cam_model(cfg, cfg.cam.checkpoint)


@pytest.mark.parametrize("mode", ["bicubic", "nearest"])
def test_high_res_equals_the_reference_loop(trained_model, mode):
    """make_cam (batched images, flip pairs, the loader's resize) against the plain loop of the
    references' procedure. Scale 0.7 of a 64-px image is where floor (nearest) and round
    (bicubic) sizes differ, so a wrong size rule fails here."""
    cfg, model = trained_model
    cfg.cam.resize_mode = mode
    cfg.cam.scales = [1.0, 0.7, 1.3, 2.0]
    summary = make_cams(cfg, model, torch.device("cpu"), split="val")
    assert summary["computed_here"] == 8
    L = VOCLayout(cfg.data.root)
    labels = ImageLabels.load(cfg.data.label_file)
    for image_id in L.read_split("val")[:3]:
        img = read_image(L.image(image_id))
        d = load_cam(cam_path(cfg.cam.out_dir, image_id), img.shape[:2])
        keys = labels.indices(image_id)
        assert d["keys"].tolist() == keys
        ref = straightforward_cam(model, img, keys, cfg.cam.scales, mode)
        assert d["high_res"].shape == ref.shape
        np.testing.assert_allclose(d["high_res"], ref, atol=1e-5, rtol=0)
        assert np.allclose(d["high_res"].reshape(len(keys), -1).max(1), 1.0, atol=1e-4)
        # the file is pickle-free
        with np.load(cam_path(cfg.cam.out_dir, image_id), allow_pickle=False) as z:
            assert z["keys"].dtype == np.int16 and set(z.files) == {"keys", "high_res"} | ({"strided"} if cfg.cam.save_strided else set())


def test_batching_images_is_exact_and_rerun_skips(trained_model, tmp_path, monkeypatch):
    import wsss.cam.make as make

    monkeypatch.setattr(make, "BATCH_ON_CPU", True)  # batching is for CUDA; its path checked here
    cfg, model = trained_model
    cfg.cam.save_strided = True
    cfg.cam.images_per_batch = 1
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "one")
    cfg.cam.images_per_batch = 4
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "four")
    for p in (tmp_path / "one").glob("*.npz"):
        a, b = load_cam(p), load_cam(tmp_path / "four" / p.name)
        np.testing.assert_allclose(a["high_res"], b["high_res"], atol=1e-5)
        assert a["strided"].shape[1:] == (16, 16)  # ceil(64 / 4)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "four").glob("*.npz")}
    again = make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "four")
    assert again["computed_here"] == 0 and again["skipped_here"] == 8
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "four").glob("*.npz")}
    assert not list((tmp_path / "four").glob(".*"))  # no temp files left


def test_made_by_guards_stale_folders_and_enables_reuse(trained_model, tmp_path):
    cfg, model = trained_model
    dev = torch.device("cpu")
    make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "a")
    assert (tmp_path / "a" / "made_by.json").is_file()
    # same weights and settings: linked, not recomputed
    b = make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "b", reuse_from=[tmp_path / "nowhere", tmp_path / "a"])
    assert (b["reused_here"], b["computed_here"], b["skipped_here"]) == (8, 0, 0)
    for p in (tmp_path / "a").glob("*.npz"):
        assert (tmp_path / "b" / p.name).samefile(p)
    # other inference settings: the source does not match, everything is computed
    cfg.cam.scales = [1.0]
    c = make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "c", reuse_from=[tmp_path / "a"])
    assert (c["reused_here"], c["computed_here"]) == (0, 8)
    # other weights into a finished folder: refused, naming the file and what changed
    cfg.cam.scales = [1.0, 0.5, 1.5]
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    with pytest.raises(DataError, match=r"a/made_by\.json: the CAMs there were made with other weights_sha256; set cam\.redo=true"):
        make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "a")
    redone = make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "a", redo=True, reuse_from=[tmp_path / "b"])
    assert (redone["reused_here"], redone["computed_here"]) == (0, 8)
    again = make_cams(cfg, model, dev, split="val", out_dir=tmp_path / "a")
    assert again["skipped_here"] == 8


def test_cam_file_checks(tmp_path):
    p = tmp_path / "a.npz"
    save_npz(p, keys=np.array([0, 1], np.int16), high_res=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"a.npz: 'high_res' must be \[len\(keys\)=2, H, W\]"):
        load_cam(p)
    save_npz(p, keys=np.array([0], np.int16), high_res=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"'high_res' is 4x4 but the image is 5x4"):
        load_cam(p, (5, 4))
    save_npz(p, high_res=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"missing key\(s\) \['keys'\]"):
        load_cam(p)
    np.savez(tmp_path / "evil.npz", keys=np.array([{"a": 1}], dtype=object), high_res=np.zeros((1, 2, 2)))
    with pytest.raises(DataError, match=r"evil.npz: refused: holds pickled objects"):
        load_cam(tmp_path / "evil.npz")


def test_reuse_copies_atomically_when_links_fail(trained_model, tmp_path, monkeypatch):
    import wsss.cam.make as make

    cfg, model = trained_model
    make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "a")

    def no_link(a, b):
        raise OSError("cross-device link")

    monkeypatch.setattr(make.os, "link", no_link)
    b = make_cams(cfg, model, torch.device("cpu"), split="val", out_dir=tmp_path / "b", reuse_from=[tmp_path / "a"])
    assert (b["reused_here"], b["computed_here"]) == (8, 0)
    for p in (tmp_path / "a").glob("*.npz"):
        copy = tmp_path / "b" / p.name
        assert not copy.samefile(p) and copy.read_bytes() == p.read_bytes()
    assert not list((tmp_path / "b").glob(".*"))  # no temp files left


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


@pytest.mark.parametrize("keep", [True, False])
def test_flip_apart_and_largest_first_change_no_value(r18, keep):
    """make_cam on the CPU runs each flip as a forward of its own and the scales from the
    largest down (less memory held at once): the maps are bit for bit those of one batch per
    scale in the given order, kept classes or all, high-res and strided."""
    _, model = r18
    g = torch.Generator().manual_seed(1)
    # the largest scale in the middle, so that largest_first reorders
    inputs = [torch.randn(2, 3, 20, 28, generator=g), torch.randn(2, 3, 40, 56, generator=g),
              torch.randn(2, 3, 10, 14, generator=g)]
    keys = [torch.tensor([1, 2]), torch.tensor([0])] if keep else None
    with torch.inference_mode():
        plain = multiscale_cam(model, inputs, (40, 56), flip=True, strided_stride=4, keys=keys)
        lean = multiscale_cam(model, inputs, (40, 56), flip=True, strided_stride=4, keys=keys, flip_apart=True,
                              largest_first=True)
    for a, b in zip(plain, lean):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


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
