"""The synthetic bench's rules: the premise check, the verdict (an effect only beyond 2 std of
the baseline), the aggregation over seeds, the shifted-target control's masks."""
import numpy as np
import pytest

from wsss.cam.premise import check_premise
from tools.compare import BASELINE, aggregate, data_overrides, verdict, write_shifted_masks


def _cam_eval(part, body, prec, rec):
    return {"coverage": {"best": {"part": part, "body": body}},
            "best": {"iou": {"background": 0.9, "a": 0.5, "b": 0.5}, "precision": {"a": prec[0], "b": prec[1]},
                     "recall": {"a": rec[0], "b": rec[1]}}}


def test_premise_check_each_criterion():
    pseudo = {"confident_only": {"precision": {"a": 0.9, "b": 0.85}}}
    ok = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.8), (0.4, 0.3)), pseudo)
    assert ok["ok"] and all(c["ok"] for c in ok["checks"].values())
    assert not check_premise(_cam_eval(0.85, 0.3, (0.9, 0.8), (0.4, 0.3)), pseudo)["checks"]["parts_covered"]["ok"]
    assert not check_premise(_cam_eval(0.95, 0.7, (0.9, 0.8), (0.4, 0.3)), pseudo)["checks"]["bodies_not_covered"]["ok"]
    flood = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.3), (0.4, 0.8)), pseudo)
    assert not flood["ok"] and flood["checks"]["no_flooding"]["value"] == ["b"]
    low = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.8), (0.4, 0.3)), {"confident_only": {"precision": {"a": 0.7, "b": 0.8}}})
    assert not low["ok"] and low["checks"]["pseudo_precision"]["value"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no part/body coverage"):
        check_premise({"coverage": None, "best": {}})


def test_verdict_and_aggregate():
    assert verdict(0.011, 0.005) == "effect: higher" and verdict(-0.011, 0.005) == "effect: lower"
    assert verdict(0.009, 0.005) == "none beyond noise"
    runs = {BASELINE: [{"cam_miou": v} for v in (0.40, 0.42, 0.44)], "X": [{"cam_miou": v} for v in (0.50, 0.52, 0.54)],
            "Y": [{"cam_miou": v} for v in (0.43, 0.45, 0.41)]}
    agg = aggregate(runs)
    assert agg[BASELINE]["cam_miou"]["mean"] == pytest.approx(0.42) and agg[BASELINE]["cam_miou"]["std"] == pytest.approx(0.02)
    assert agg["X"]["cam_miou"]["diff"] == pytest.approx(0.10) and agg["X"]["cam_miou"]["effect"] == "effect: higher"
    assert agg["Y"]["cam_miou"]["effect"] == "none beyond noise"  # +0.01 < 2 x 0.02
    assert agg["X"]["part"]["mean"] is None  # a metric no run reported


def test_heldout_data_root_sits_beside_the_benchs_root():
    assert data_overrides(0) == []  # the configs' own data
    assert data_overrides(1) == ["data.synthetic.seed=1", "data.root=data/synthetic_voc_seed1/VOC2012"]
    # a bench on other data (another scene) must not share the default bench's held-out root
    elong = data_overrides(1, 0, ["data.root=data/synthetic_voc_elongated/VOC2012", "train.epochs=10"])
    assert elong[-1] == "data.root=data/synthetic_voc_elongated_seed1/VOC2012"


def test_shifted_targets_are_the_rolled_ground_truth(tiny_root, tmp_path):
    from wsss.fileio import read_mask

    out = write_shifted_masks(tiny_root, tmp_path / "shifted")
    gts = sorted((tiny_root / "SegmentationClassAug").glob("*.png"))
    assert len(list(out.glob("*.png"))) == len(gts)
    for p in gts[:5]:
        m = read_mask(p)
        assert np.array_equal(read_mask(out / p.name), np.roll(m, m.shape[1] // 2, axis=1))
