"""train_cam -> make_cam -> eval_cam -> make_pseudo through the real scripts on tiny synthetic data."""
import json

import pytest

from conftest import CONFIGS, run_script_here, tiny_overrides


def run_script(script: str, *args: str):
    """The real script as __main__, in this process (a child would spend seconds importing torch)."""
    return run_script_here(script, *args, check=True)


@pytest.mark.slow
def test_cam_chain_end_to_end(tiny_root, tmp_path):
    work = tmp_path / "work"
    args = ["--config", str(CONFIGS / "cam/cam_r18_synthetic.yaml"),
            *tiny_overrides(tiny_root, work, **{"train.epochs": 2, "runtime.tensorboard": True, "train.vis_interval": 2})]
    out = run_script("train_cam.py", *args)
    assert (work / "checkpoints" / "final.pth").is_file()
    assert (work / "config.yaml").is_file()
    assert list((work / "tb").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(work / "tb")).Reload().Tags()
    assert {"cam/loss", "cam/images_per_s"} <= set(tb["scalars"]), tb["scalars"]
    assert any(t.startswith("cam/lr_") for t in tb["scalars"]) and "cam/cam" in tb["images"], tb
    run_script("make_cam.py", *args)
    assert len(list((work / "cams").glob("*.npz"))) == 24  # train_aug
    out = run_script("eval_cam.py", *args)
    res = json.loads((work / "metrics" / "cam_eval.json").read_text())
    assert f"{res['miou'] * 100:.2f} at best threshold {res['best_threshold']:.2f}" in out.stdout
    assert res["num_images"] == 12 and len(res["curve"]) == 56 and "config" in res
    assert (work / "metrics" / "cam_eval.md").read_text().startswith("# CAM evaluation")
    # the synthetic data's part masks give the part / body / background coverage, at the best
    # threshold and at the fixed one, per class and overall
    cov = res["coverage"]
    assert cov["best"]["threshold"] == res["best_threshold"] and cov["fixed"]["threshold"] == 0.30
    for key in ("best", "fixed"):
        assert all(0 <= cov[key][m] <= 1 for m in ("part", "body", "background_fp"))
        assert set(cov[key]["per_class"]) == {"aeroplane", "bicycle", "bird"}
    assert "part covered" in out.stdout and "## Coverage of parts and bodies" in (work / "metrics" / "cam_eval.md").read_text()
    out = run_script("make_pseudo.py", *args)
    assert len(list((work / "pseudo").glob("*.png"))) == 24
    pe = json.loads((work / "metrics" / "pseudo_eval.json").read_text())
    assert 0 <= pe["miou_255_as_background"] <= 1 and 0 < pe["confident_fraction"] <= 1
    assert f"{pe['miou_255_as_background'] * 100:.2f} (255 as background)" in out.stdout
    # the bench's premise check runs on these real evaluations (a 1-epoch net need not meet it)
    from tools.premise import check_premise

    premise = check_premise(res, pe)
    assert set(premise["checks"]) == {"parts_covered", "bodies_not_covered", "no_flooding", "pseudo_precision"}
    assert premise["ok"] == all(c["ok"] for c in premise["checks"].values())
    out = run_script("visualize.py", *args, "--n", "2")
    assert len(list((work / "vis").glob("*.png"))) == 2
    # a rerun of make_cam skips every finished file
    out = run_script("make_cam.py", *args)
    assert "(0 computed on rank 0" in out.stdout
