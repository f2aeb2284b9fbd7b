"""IRN (wsss.irn): pairs, relation labels, affinities, the loss, the walk, the label maps,
the boundary network, its data and a tiny train + label run. Written from the
definitions (IRN's paper and code), not from our implementation's outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss.irn.indexing import PairIndex, half_disk_offsets, pair_index, relation_labels, segment_path
from wsss.irn.labels import irn_label_map, scores_to_labels, walk_scores
from wsss.irn.loss import boundary_loss, pair_affinity
from wsss.irn.walk import Stencil, dense_random_walk, dense_transition, sparse_random_walk


# --------------------------------------------------------------------------
# pairs and paths
# --------------------------------------------------------------------------
def test_half_disk_offsets():
    offs = half_disk_offsets(5)
    # dy = 0: dx 1..4; dy = 1, 2: |dx| <= 4; dy = 3: |dx| <= 3; dy = 4: |dx| <= 2
    assert len(offs) == 4 + 9 + 9 + 7 + 5 == 34
    assert len(half_disk_offsets(10)) == 152
    for dy, dx in offs:
        assert dy * dy + dx * dx < 25 and (dy > 0 or dx > 0)
        assert (-dy, -dx) not in offs  # each unordered pair once
    assert sorted(pair_index(5).offsets) == sorted(offs)


def test_segment_paths_by_hand():
    assert segment_path(0, 3) == [(0, 3), (0, 2), (0, 1), (0, 0)]
    assert segment_path(2, 0) == [(2, 0), (1, 0), (0, 0)]
    # the diagonal: the box's four pixels all lie within distance 1 of the line y = x
    assert sorted(segment_path(1, 1)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # (2, 3): (2x - 3y)^2 < 13 keeps 8 of the box's 12 pixels; (0, 2), (0, 3), (2, 0), (2, 1) are too far
    p = segment_path(2, 3)
    assert p[0] == (2, 3)
    assert sorted(p) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]
    # paths are grouped by length in the index (the reference's tensor order)
    lengths = [len(q) for q in pair_index(10).paths]
    assert lengths == sorted(lengths)


def test_relation_labels_by_hand():
    """Radius 2: offsets (0,1), (1,0), (1,-1), (1,1); margin 1, so the sources of a 3 x 4
    map are rows 0-1, columns 1-2. The 16 pairs counted by hand: 3 background positives,
    6 foreground positives, 6 negatives, one ignored (to the 255 pixel)."""
    lab = torch.tensor([[0, 0, 1, 1],
                        [0, 0, 1, 1],
                        [255, 0, 1, 1]])
    index = PairIndex(2)
    assert index.offsets == ((0, 1), (1, 0), (1, -1), (1, 1))
    bg, fg, neg = relation_labels(lab, index)
    assert bg.shape == (4, 4)
    assert (int(bg.sum()), int(fg.sum()), int(neg.sum())) == (3, 6, 6)
    # source (1, 1) (flat source 2) with offset (1, -1) reaches the 255 pixel: no label at all
    assert bg[2, 2] == fg[2, 2] == neg[2, 2] == 0
    # source (0, 1) -> (1, 1): both background
    assert bg[1, 0] == 1 and fg[1, 0] == 0
    # source (0, 2) -> (0, 3): both class 1
    assert fg[0, 1] == 1
    # a batch gives the same per image
    b = relation_labels(torch.stack([lab, lab]), index)
    assert b[0].shape == (2, 4, 4) and torch.equal(b[1][1], fg)


# --------------------------------------------------------------------------
# affinity and loss
# --------------------------------------------------------------------------
def test_affinity_of_a_wall():
    """A vertical wall of B = 1: affinity 0 for every pair whose columns span the wall
    (the path has a pixel in every column between its ends), 1 for every other pair."""
    h, w, wall = 12, 16, 7
    boundary = torch.zeros(h, w)
    boundary[:, wall] = 1.0
    index = pair_index(4)
    aff = pair_affinity(boundary, index)
    m = index.margin
    ch, cw = index.source_window(h, w)
    for k, (dy, dx) in enumerate(index.offsets):
        a = aff[k].view(ch, cw)
        for r in range(ch):
            for c in range(cw):
                x0, x1 = sorted((m + c, m + c + dx))
                assert a[r, c] == (0.0 if x0 <= wall <= x1 else 1.0), (dy, dx, r, c)
    # one weak pixel on a horizontal path: 1 - its value
    b2 = torch.zeros(h, w)
    b2[0, 6] = 0.3
    aff2 = pair_affinity(b2, index)
    k = index.offsets.index((0, 3))
    assert aff2[k].view(ch, cw)[0, 6 - 3 - m].item() == pytest.approx(0.7)  # source (0, 3) -> (0, 6)


def test_loss_by_hand():
    aff = torch.tensor([0.9, 0.5, 0.2, 0.99])
    bg = torch.tensor([1.0, 0, 0, 0])
    fg = torch.tensor([0, 1.0, 0, 0])
    neg = torch.tensor([0, 0, 1.0, 1.0])
    t = boundary_loss(aff, bg, fg, neg)
    e_bg = -math.log(0.9 + 1e-5) / (1 + 1e-5)
    e_fg = -math.log(0.5 + 1e-5) / (1 + 1e-5)
    e_neg = (-math.log(1 + 1e-5 - 0.2) - math.log(1 + 1e-5 - 0.99)) / (2 + 1e-5)
    assert t["bg_pos"].item() == pytest.approx(e_bg, rel=1e-6)
    assert t["fg_pos"].item() == pytest.approx(e_fg, rel=1e-6)
    assert t["neg"].item() == pytest.approx(e_neg, rel=1e-6)
    assert t["loss"].item() == pytest.approx((e_bg / 2 + e_fg / 2 + e_neg) / 2, rel=1e-6)
    # no pairs of a kind: that term is 0, not NaN
    z = boundary_loss(aff, torch.zeros(4), fg, neg)
    assert z["bg_pos"].item() == 0.0 and math.isfinite(z["loss"].item())


def test_loss_ratio_is_over_the_batch():
    """Each term is one ratio over the whole batch (sums, then one division), as the
    reference: an image with more pairs weighs more."""
    aff = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.9, 0.9]])
    bg = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 1.0]])
    zero = torch.zeros_like(aff)
    t = boundary_loss(aff, bg, zero, zero)
    expected = (-math.log(0.5 + 1e-5) - 3 * math.log(0.9 + 1e-5)) / (4 + 1e-5)
    assert t["bg_pos"].item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------
# the walk
# --------------------------------------------------------------------------
def _boundary(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(h, w, generator=g) ** 3
    b[:, w // 2] = 0.97  # a leaky wall
    return b


def test_dense_transition_by_definition():
    """T = A**beta / column sums, with A = 1 - max(B on the path) for half-disk pairs, 1 on
    the diagonal, symmetric, 0 beyond the radius."""
    h, w, beta = 4, 5, 3
    b = _boundary(h, w)
    t = dense_transition(b.double(), beta=beta, radius=2)
    a = torch.zeros(h * w, h * w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            a[y * w + x, y * w + x] = 1
            for dy, dx in half_disk_offsets(2):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    v = 1 - max(float(b[y + py, x + px]) for py, px in segment_path(dy, dx))
                    a[y * w + x, yy * w + xx] = a[yy * w + xx, y * w + x] = v
    expected = a ** beta / (a ** beta).sum(0, keepdim=True)
    assert torch.allclose(t, expected, atol=1e-12)
    assert torch.allclose(t.sum(0), torch.ones(h * w, dtype=torch.float64))


def test_stencil_is_the_transition_matrix():
    h, w = 9, 11
    b = _boundary(h, w, 1).double()
    t = dense_transition(b, beta=10, radius=5)
    st = Stencil(b, beta=10, radius=5)
    x = torch.randn(3, h * w, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(st.step(x.view(3, h, w)).reshape(3, -1), x @ t, atol=1e-12)


@pytest.mark.parametrize("hw", [(24, 32), (13, 7)])
def test_sparse_walk_equals_dense(hw):
    """256 stencil steps = the reference's T squared 8 times: equal in float64 to 1e-10;
    float32 dense (the reference's arithmetic) against our float64 walk within its rounding."""
    h, w = hw
    b = _boundary(h, w, 3)
    cams = torch.rand(2, h, w, generator=torch.Generator().manual_seed(4))
    d64 = dense_random_walk(cams.double(), b.double())
    s64 = sparse_random_walk(cams.double(), b.double())
    assert torch.allclose(s64, d64, rtol=0, atol=1e-10 * float(d64.abs().max()))
    d32 = dense_random_walk(cams, b)
    s = sparse_random_walk(cams, b)
    assert s.dtype == torch.float32
    assert float((s - d32).abs().max()) <= 2e-4 * float(d32.abs().max())


def test_walk_does_not_cross_a_closed_wall():
    h, w = 10, 14
    b = torch.zeros(h, w)
    b[:, 6] = 1.0
    cams = torch.zeros(1, h, w)
    cams[0, :, :3] = 1.0
    rw = sparse_random_walk(cams, b)
    assert float(rw[0, :, 7:].abs().max()) == 0.0  # nothing crosses
    assert float(rw[0, :, :6].min()) > 0.0  # but it spreads on its side


# --------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------
def test_background_plane_argmax_by_hand():
    scores = torch.tensor([[[0.10, 0.50, 0.30, 0.25]],
                           [[0.20, 0.40, 0.60, 0.10]]])
    out = scores_to_labels(scores, keys=[4, 9], bg_thres=0.25)
    # pixel 0: both below 0.25 -> bg; 1: class 4 -> 5; 2: class 9 -> 10; 3: a tie with the plane -> bg
    assert out.tolist() == [[0, 5, 10, 0]]
    assert out.dtype == np.uint8


def test_scores_divided_by_the_common_maximum():
    """A uniform map stays uniform under the walk (each step averages). Divided by the
    maximum over all classes and pixels: 0.1 everywhere becomes 1.0 (class), and a second
    class at 0.02 becomes 0.2 (below the plane), not 1.0 as a per-class division would."""
    h, w = 6, 8
    cams = torch.stack([torch.full((h, w), 0.1), torch.full((h, w), 0.02)])
    b = torch.zeros(h, w)
    s = walk_scores(cams, b, (4 * h - 2, 4 * w - 3))
    assert s.shape == (2, 4 * h - 2, 4 * w - 3)
    assert torch.allclose(s[0], torch.ones_like(s[0]), atol=1e-6)
    assert torch.allclose(s[1], torch.full_like(s[1], 0.2), atol=1e-6)
    lab = irn_label_map(cams, [3, 7], b, (4 * h - 2, 4 * w - 3))
    assert (lab == 4).all()
    # no classes, or CAMs all zero: background
    assert (irn_label_map(cams[:0], [], b, (20, 28)) == 0).all()
    assert (irn_label_map(torch.zeros(1, h, w), [2], b, (20, 28)) == 0).all()


def test_zero_boundary_control_is_the_walk_without_walls():
    """irn.boundary: zeros (the bench's control) walks the CAM with every affinity 1: the
    label map of image_irn_labels(None, ...) is irn_label_map on a zero boundary; a peaked
    CAM then spreads over the whole image (no wall holds it)."""
    from wsss.irn.labels import image_irn_labels

    h, w = 6, 8
    cam = np.zeros((2, h, w), np.float32)
    cam[0, 1, 1] = 1.0
    cam[1, 4, 6] = 0.5
    image = np.random.default_rng(0).integers(0, 256, (4 * h, 4 * w, 3), dtype=np.uint8)
    got = image_irn_labels(None, image, {"keys": np.array([1, 3]), "strided": cam}, [0.5] * 3, [0.2] * 3,
                           exp_times=4, radius=2, canvas=32)
    want = irn_label_map(torch.from_numpy(cam), [1, 3], torch.zeros(h, w), (4 * h, 4 * w), exp_times=4, radius=2)
    assert np.array_equal(got, want)
    assert (got > 0).mean() > 0.9  # the walk floods: the boundary network is what stops it


# --------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net18():
    from wsss.irn.model import BoundaryNet

    torch.manual_seed(0)
    return BoundaryNet("resnet18", "none")


def test_network_shapes(net18):
    assert net18(torch.randn(1, 3, 64, 64)).shape == (1, 1, 16, 16)
    assert net18(torch.randn(2, 3, 70, 90)).shape == (2, 1, 18, 23)  # ceil(70/4), ceil(90/4)
    groups = [m for m in net18.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(groups) == 5 and all(g.num_groups == 4 and g.num_channels == 32 for g in groups)
    assert net18.edge6.in_channels == 160 and net18.edge6.bias is not None


def test_backbone_frozen(net18):
    net18.train()
    assert net18.training and not any(m.training for m in net18.backbone.modules())
    before = {k: v.clone() for k, v in net18.backbone.state_dict().items()}
    net18.zero_grad()
    from wsss.irn.training import irn_loss

    lab = torch.zeros(2, 16, 16, dtype=torch.long)
    lab[:, :, 8:] = 1
    lab[:, 0, :] = 255
    terms = irn_loss(net18, {"img": torch.randn(2, 3, 64, 64), "label": lab}, radius=5)
    terms["loss"].backward()
    assert all(p.grad is None for p in net18.backbone.parameters())
    assert all(p.grad is not None for p in net18.edge_parameters())
    assert all(torch.equal(before[k], v) for k, v in net18.backbone.state_dict().items())  # BN statistics too
    assert {id(p) for p in net18.edge_parameters()} == {id(p) for p in net18.parameters() if p.requires_grad}


def test_boundary_map(net18):
    from wsss.irn.model import boundary_map

    net18.eval()
    img = torch.randn(3, 37, 50)
    b = boundary_map(net18, img, canvas=64)
    assert b.shape == (10, 13) and float(b.min()) >= 0 and float(b.max()) <= 1
    # image and flip averaged in logit space: the map of the flipped image is the flipped map
    assert torch.allclose(boundary_map(net18, img.flip(-1), canvas=64), b.flip(-1), atol=1e-6)
    # the same as one logit average by hand
    x = torch.nn.functional.pad(torch.stack([img, img.flip(-1)]), [0, 64 - 50, 0, 64 - 37])
    with torch.no_grad():
        lo = net18(x)[:, 0, :10, :13]
    assert torch.allclose(b, torch.sigmoid(lo[0] / 2 + lo[1].flip(-1) / 2), atol=1e-6)
    # a side above the canvas: padded to the square of the longer side, never cut
    assert boundary_map(net18, torch.randn(3, 30, 81), canvas=64).shape == (8, 21)


# --------------------------------------------------------------------------
# data, training, label files
# --------------------------------------------------------------------------
def test_reduce_mask_is_pil_nearest():
    from wsss.irn.data import reduce_mask

    m = np.arange(64, dtype=np.uint8).reshape(8, 8)
    # PIL's nearest samples the centre of each 4 x 4 cell: pixel 4i + 2
    assert reduce_mask(m).tolist() == [[m[2, 2], m[2, 6]], [m[6, 2], m[6, 6]]]
    assert reduce_mask(np.zeros((10, 6), np.uint8)).shape == (2, 2)  # round(2.5) = 2, round(1.5) = 2


def test_affinity_dataset(tiny_root):
    from wsss.config import AugConfig
    from wsss.data.voc import VOCLayout
    from wsss.irn.data import AffinityDataset

    ids = VOCLayout(tiny_root).read_split("train_aug")[:3]
    aug = AugConfig(resize_long=[], scale_range=[0.5, 1.5], interpolation="bicubic", hflip=True, crop_size=64)
    ds = AffinityDataset(tiny_root, ids, "SegmentationClassAug", aug, num_classes=3)
    s = ds[(0, 5)]
    assert s["img"].shape == (3, 64, 64) and s["label"].shape == (16, 16) and s["label"].dtype == torch.int64
    assert set(s["label"].unique().tolist()) <= {0, 1, 2, 3, 255}
    assert torch.equal(ds[(0, 5)]["label"], s["label"])  # the augmentation follows the seed
    with pytest.raises(ValueError, match="multiple of 4"):
        AffinityDataset(tiny_root, ids, "SegmentationClassAug", AugConfig(crop_size=62), num_classes=3)


@pytest.mark.slow
def test_the_irn_chain_runs_as_pipeline_stages(tiny_root, tmp_path):
    """CAM -> pseudo masks -> train_irn -> make_irn_labels -> eval_irn -> DeepLab on IRN's labels,
    through run_pipeline on tiny data: every stage leaves its record and numbers; a rerun skips
    them all; a walk key changes make_irn_labels' record (refused without irn.redo), not the
    boundary network's."""
    import json

    from conftest import CONFIGS, run_script_here, tiny_overrides
    from wsss.fileio import read_mask
    from wsss.records import StaleOutputError

    work = tmp_path / "irn"
    over = tiny_overrides(tiny_root, work, **{
        "train.max_steps": 2, "cam.split": "train", "pseudo.split": "train", "cam.save_strided": True,
        "irn.backbone": "resnet18", "irn.weights": "none", "irn.batch_size": 4, "irn.workers": 0, "irn.radius": 5,
        "irn.aug.crop_size": 64, "irn.infer_canvas": 64, "irn.train_split": "train", "irn.split": "train",
        "irn.log_interval": 1, "seg.masks": "irn", "seg.train_split": "train", "seg.iterations": 2, "seg.batch_size": 4,
        "seg.weights": "none", "seg.workers": 0, "seg.scales": [1.0], "seg.test_split": "", "pipeline.visualize_ids": 1})
    stages = "train_cam,make_cam,make_pseudo,train_irn,make_irn_labels,eval_irn,train_seg,eval_seg"
    args = ["--config", str(CONFIGS / "cam/cam_r18_synthetic.yaml"), *over, "--stages", stages]
    out = run_script_here("run_pipeline.py", *args, check=True).stdout
    labels = sorted((work / "irn" / "labels").glob("*.png"))
    assert len(labels) == 12 and "IRN label mIoU on train" in out
    assert set(np.unique(read_mask(labels[0])).tolist()) <= {0, 1, 2, 3}
    summary = json.loads((work / "metrics" / "summary.json").read_text())
    assert 0 <= summary["numbers"]["irn_miou"] <= 1 and "seg_miou" in summary["numbers"]
    rec = json.loads((work / "irn" / "labels" / "made_by.json").read_text())
    assert rec["inputs"]["boundary"]["stage"] == "train_irn" and rec["inputs"]["cams"]["stage"] == "make_cam"
    seg = json.loads((work / "seg" / "checkpoints" / "made_by.json").read_text())
    assert seg["inputs"]["masks"]["stage"] == "make_irn_labels"  # DeepLab trained on the walk's labels
    again = run_script_here("run_pipeline.py", *args, check=True).stdout
    assert all(f"[pipeline] {s}: finished earlier" in again for s in stages.split(","))
    from wsss.config import load_config
    from wsss.lock import release_all
    from wsss.stages import run

    cfg = load_config(CONFIGS / "cam/cam_r18_synthetic.yaml", [*over, "irn.beta=8"])
    try:
        with pytest.raises(StaleOutputError, match=r"irn/labels/made_by\.json: .*irn\.beta: 10\.0 -> 8\.0"):
            run(cfg, "make_irn_labels")
        run(cfg, "train_irn")  # the walk's keys are not the boundary network's: nothing to redo
    finally:
        release_all()
