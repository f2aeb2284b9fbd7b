import numpy as np
import pytest

from wsss.metrics import ThresholdSweep, cam_to_label, confusion_matrix, scores, threshold_range


def test_miou_hand_computed_with_ignore_and_absent_classes():
    gt = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 3],
                   [255, 255, 0, 3]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 3],
                     [3, 2, 0, 0]])
    conf = confusion_matrix(gt, pred, 5)
    assert conf.sum() == 9  # the three GT-255 pixels are ignored
    s = scores(conf)
    # class 0: TP 3, FP 1 (gt1->0) + 1 (gt3->0), FN 1 (gt0->1) -> 3/6
    # class 1: TP 2, FP 1, FN 1 -> 2/4
    # class 2: never in GT, never predicted on a valid pixel -> no IoU
    # class 3: TP 1, FP 0, FN 1 -> 1/2
    # class 4: absent from GT and prediction -> no IoU
    assert s["iou"]["0"] == pytest.approx(0.5)
    assert s["iou"]["1"] == pytest.approx(0.5)
    assert s["iou"]["2"] is None and s["iou"]["4"] is None
    assert s["iou"]["3"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx(0.5)
    assert s["precision"]["3"] == pytest.approx(1.0) and s["recall"]["3"] == pytest.approx(0.5)
    # a class predicted but never in GT counts with IoU 0
    s2 = scores(confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2))
    assert s2["iou"]["1"] == 0.0 and s2["miou"] == pytest.approx(0.25)


def test_predicted_255_conventions():
    gt = np.array([1, 1, 0, 0])
    pred = np.array([1, 255, 255, 0])
    as_bg = confusion_matrix(gt, pred, 2)
    assert as_bg.tolist() == [[2, 0], [1, 1]]
    confident = confusion_matrix(gt, pred, 2, ignore_pred_255=True)
    assert confident.tolist() == [[1, 0], [0, 1]]


def test_cam_to_label_ties_go_to_background():
    cams = np.array([[[0.3, 0.31, 0.1]], [[0.2, 0.5, 0.3]]], np.float32)
    assert cam_to_label(cams, np.array([4, 7]), 0.3).tolist() == [[0, 8, 0]]
    assert cam_to_label(np.zeros((0, 1, 2)), np.array([], int), 0.1).tolist() == [[0, 0]]


def test_sweep_equals_separate_evaluations():
    rng = np.random.default_rng(0)
    k = 6
    thresholds = threshold_range(0.05, 0.60, 0.01)
    assert len(thresholds) == 56
    sweep = ThresholdSweep(k, thresholds)
    separate = {t: np.zeros((k + 1, k + 1), np.int64) for t in thresholds}
    for i in range(12):
        h, w = rng.integers(5, 30, 2)
        n_keys = int(rng.integers(0, 4))
        keys = np.sort(rng.choice(k, n_keys, replace=False))
        cams = rng.random((n_keys, h, w)).astype(np.float32)
        cams[:, 0, 0] = np.float32(0.3)  # exactly on a threshold
        cams = np.round(cams, 2).astype(np.float32)  # many ties with thresholds
        gt = rng.integers(0, k + 1, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        sweep.add(gt, cams, keys)
        for t in thresholds:
            separate[t] += confusion_matrix(gt, cam_to_label(cams, keys, t), k + 1)
    confs = sweep.confusions()
    for j, t in enumerate(thresholds):
        np.testing.assert_array_equal(confs[j], separate[t], err_msg=f"threshold {t}")
    res = sweep.results()
    assert res[10]["threshold"] == pytest.approx(0.15)
    assert res[10]["miou"] == pytest.approx(scores(separate[thresholds[10]])["miou"])


def test_part_body_coverage_by_hand():
    """One class; a row of 8 pixels: background, body, part. At threshold 0.3 the CAM covers
    both part pixels, one of the two body pixels outside the part and one of four background
    pixels; at 0.5 only the part."""
    from wsss.metrics import ThresholdSweep, coverage, region_map

    gt = np.array([[0, 0, 1, 1, 1, 1, 0, 0]])
    parts = np.array([[0, 0, 0, 1, 1, 0, 0, 0]])
    cam = np.array([[[0.1, 0.4, 0.2, 0.9, 0.8, 0.35, 0.05, 0.0]]], np.float32)
    regions = region_map(gt, parts, 1)
    assert regions.tolist() == [[0, 0, 1, 2, 2, 1, 0, 0]]
    sweep = ThresholdSweep(1, [0.3, 0.5], gt_rows=3)
    sweep.add(regions, cam, np.array([0]))
    at30, at50 = sweep.confusions()
    c30 = coverage(at30, ["aeroplane"])
    assert (c30["part"], c30["body"], c30["background_fp"]) == (1.0, 0.5, 0.25)
    assert c30["per_class"]["aeroplane"] == {"part": 1.0, "body": 0.5, "background_fp": 0.25}
    c50 = coverage(at50, ["aeroplane"])
    assert (c50["part"], c50["body"], c50["background_fp"]) == (1.0, 0.0, 0.0)


def test_coverage_with_decoy_regions_by_hand():
    """With the data's decoy masks the background splits into plain background, decoy bodies
    and decoy parts: background FP stays the share of every background pixel, decoy body FP is
    the decoy bodies' own, and the part coverage counts class parts only."""
    from wsss.metrics import ThresholdSweep, coverage, region_map, region_rows

    gt = np.array([[0, 0, 1, 1, 1, 0, 0, 0, 0, 0]])
    parts = np.array([[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]])
    decoys = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 2, 0]])
    cam = np.array([[[0.0, 0.0, 0.2, 0.9, 0.5, 0.6, 0.1, 0.1, 0.9, 0.0]]], np.float32)
    regions = region_map(gt, parts, 1, decoys)
    assert regions.tolist() == [[0, 0, 1, 2, 1, 3, 3, 3, 4, 0]] and region_rows(1, True) == 5
    sweep = ThresholdSweep(1, [0.3], gt_rows=5)
    sweep.add(regions, cam, np.array([0]))
    c = coverage(sweep.confusions()[0], ["aeroplane"])
    # part 1/1, body 1/2; background: decoy body 1 of 3 and the decoy part, of 7 background pixels
    assert (c["part"], c["body"], c["background_fp"], c["decoy_body_fp"]) == (1.0, 0.5, 2 / 7, 1 / 3)
    assert c["per_class"]["aeroplane"]["decoy_body_fp"] == 1 / 3
    plain = ThresholdSweep(1, [0.3], gt_rows=3)
    plain.add(region_map(gt, parts, 1), cam, np.array([0]))
    assert coverage(plain.confusions()[0], ["aeroplane"])["background_fp"] == 2 / 7  # the same without the split
