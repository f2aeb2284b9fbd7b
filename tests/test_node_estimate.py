"""tools/node_estimate.py (docs/performance.md's 4-GPU node estimate): the work read from the
GSLM VOC config, the CRF costs taken from the published measurements, the sums."""
from __future__ import annotations

import pytest


def test_the_work_is_the_configs():
    from tools.node_estimate import CONFIG, REPO, work
    from wsss.config import load_config

    cfg = load_config(REPO / CONFIG, ["model.weights=none"])
    rows = {w["name"].split(" (")[0]: w["images"] for w in work(cfg)}
    per_epoch = (10582 // 16) * 16  # drop_last batches of 16
    assert rows["GLM training"] == 5 * per_epoch and rows["SLM training"] == 3 * 10 * per_epoch
    assert rows["CAMs of train_aug"] == 4 * 10582 and rows["nearest-resize CAMs of train"] == 3 * 1464
    assert rows["pseudo masks of train_aug, 2 CRFs per image"] == 5 * 10582
    assert rows["CAM+CRF evaluations of train, 1 CRF per image"] == 5 * 1464


def test_crf_costs_from_the_measurements():
    from tools.node_estimate import crf_costs

    bench = {"scaling": {"make_pseudo": {"workers": 2, "marginal_s_per_image": {"ours": 0.25}}},
             "make_pseudo": {"workers_2": {"code_over_ours": {"cpu_ratio": 1.4}}},
             "profile": {"make_pseudo": {"s_per_image": {"pairwise terms (lattices)": 0.1, "unary + 2 inferences": 0.4}}}}
    throughput = {"ratio_to_pydensecrf_1_proc": {"pydensecrf, 1 proc": {"median": 1.0}, "pydensecrf, 2 proc": {"median": 1.6}}}
    c = crf_costs(bench, throughput)
    assert c["ours_pseudo_core_s"] == pytest.approx(0.5) and c["code_pseudo_core_s"] == pytest.approx(0.7)
    assert c["eval_share_of_pseudo"] == pytest.approx(0.3 / 0.5) and c["process_efficiency"] == pytest.approx(0.8)


def test_the_published_estimate_adds_up():
    from tools.node_estimate import estimate

    d = estimate()
    for side in ("before", "after"):
        assert d["total_s"][side] == pytest.approx(sum(r[f"{side}_s"] for r in d["rows"]))
        gpu = [r for r in d["rows"] if r["device"] == "GPU"]
        assert all(r["before_s"] == r["after_s"] for r in gpu)  # the GPU stages are not credited to either side
    assert 0 < d["gpu_idle_share"]["after"] < 1
