"""train_cam -> make_cam -> eval_cam -> make_pseudo through the real scripts on tiny synthetic data."""
import json

import pytest

from conftest import CONFIGS, run_script, tiny_overrides


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
    out = run_script("make_pseudo.py", *args)
    assert len(list((work / "pseudo").glob("*.png"))) == 24
    pe = json.loads((work / "metrics" / "pseudo_eval.json").read_text())
    assert 0 <= pe["miou_255_as_background"] <= 1 and 0 < pe["confident_fraction"] <= 1
    assert f"{pe['miou_255_as_background'] * 100:.2f} (255 as background)" in out.stdout
    out = run_script("visualize.py", *args, "--n", "2")
    assert len(list((work / "vis").glob("*.png"))) == 2
    # a rerun of make_cam skips every finished file
    out = run_script("make_cam.py", *args)
    assert "(0 computed on rank 0" in out.stdout
