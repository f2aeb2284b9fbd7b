"""run_pipeline end to end on tiny synthetic data: the demo config's full chain, an
interrupted run that resumes, stage skipping and forcing, and the summary files."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO, finished_files, kill_when, tiny_overrides

PPL_STAGES = "[{split_after: 1, grid: 2, epochs: 1}, {split_after: 2, grid: 2, epochs: 1}, {split_after: 3, grid: 2, epochs: 1}]"


def _cmd(root, work, *extra):
    o = tiny_overrides(root, work, **{"seg.iterations": 6, "seg.batch_size": 2, "seg.workers": 0, "seg.aug.crop_size": 48,
                                      "seg.scales": [1.0], "seg.ckpt_interval": 3, "seg.log_interval": 2,
                                      "cam.scales": [1.0, 0.5, 1.5, 2.0], "cam.images_per_batch": 1,
                                      "pipeline.visualize_ids": 2})
    return [sys.executable, str(REPO / "scripts/run_pipeline.py"), "--config", str(CONFIGS / "demo/demo_synthetic.yaml"),
            *o, f"ppl.stages={PPL_STAGES}", *extra]


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


@pytest.mark.slow
def test_pipeline_interrupted_resumed_skipped_and_summarised(tiny_root, tmp_path):
    work = tmp_path / "work"
    cams = work / "cams"
    # 1) killed in the middle of make_cam
    kill_when(_cmd(tiny_root, work), lambda: len(finished_files(cams, "npz")) >= 2)
    assert (work / "pipeline" / "train_cam.json").is_file() and not (work / "pipeline" / "make_cam.json").exists()
    done_before = len(finished_files(cams, "npz"))

    # 2) rerun: train_cam is skipped, make_cam resumes, the rest runs
    out = _run(_cmd(tiny_root, work))
    assert re.search(r"\[pipeline\] train_cam: finished earlier", out)
    assert f"({24 - done_before} computed on rank 0" in out
    for stage in ("make_cam", "eval_cam", "make_pseudo", "eval_pseudo", "train_seg", "eval_seg"):
        assert (work / "pipeline" / f"{stage}.json").is_file(), stage

    # the summary holds the numbers the stages printed and saved
    summary = json.loads((work / "metrics" / "summary.json").read_text())
    cam = json.loads((work / "metrics" / "cam_eval.json").read_text())
    pseudo = json.loads((work / "metrics" / "pseudo_eval.json").read_text())
    seg = json.loads((work / "metrics" / "seg_eval.json").read_text())
    n = summary["numbers"]
    assert n["cam_miou"] == cam["miou"] and n["cam_best_threshold"] == cam["best_threshold"]
    assert n["pseudo_miou_255_as_bg"] == pseudo["miou_255_as_background"]
    assert n["pseudo_miou_confident"] == pseudo["miou_confident_pixels"]
    assert n["seg_miou"] == seg["miou"]
    assert set(summary["seconds"]) == {"train_cam", "make_cam", "eval_cam", "make_pseudo", "eval_pseudo", "train_seg", "eval_seg"}
    md = (work / "metrics" / "summary.md").read_text()
    assert f"| CAM mIoU (best threshold) | {cam['miou'] * 100:.2f} @ {cam['best_threshold']:.2f} |" in md
    assert f"| segmentation mIoU (val) | {seg['miou'] * 100:.2f} |" in md
    assert md.strip() in out.replace("\r", "")
    assert f"CAM mIoU on train: {cam['miou'] * 100:.2f}" in out
    vis = re.search(r"visualisation: (\S+\.png)", out).group(1)
    assert os.path.isfile(vis)

    # 3) a rerun skips every stage; --force redoes the named one only
    out = _run(_cmd(tiny_root, work))
    assert out.count("finished earlier") == 7
    out = _run(_cmd(tiny_root, work, "--force", "eval_cam", "--stages", "eval_cam,eval_pseudo"))
    assert "[pipeline] eval_cam ..." in out and "eval_pseudo: finished earlier" in out
