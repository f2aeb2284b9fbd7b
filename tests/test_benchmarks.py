"""The benchmarks' machinery (tools/benchmark_reference.py) runs on tiny settings and checks that
both sides did the same work; no speed is asserted in a test."""
from __future__ import annotations

import pytest


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
