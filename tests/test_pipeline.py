"""run_pipeline end to end on tiny synthetic data: the demo config's full chain, an
interrupted run that resumes, stage skipping and forcing, the summary files, and the
README's ablation sequence (no number made under one config in another's summary)."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO, finished_files, kill_when, run_script_here, tiny_overrides

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
    for stage in ("make_cam", "eval_cam", "make_pseudo", "eval_pseudo", "train_irn", "make_irn_labels", "eval_irn", "train_seg", "eval_seg"):
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
    assert set(summary["seconds"]) == {"train_cam", "make_cam", "eval_cam", "make_pseudo", "eval_pseudo",
                                       "train_irn", "make_irn_labels", "eval_irn", "train_seg", "eval_seg"}
    md = (work / "metrics" / "summary.md").read_text()
    assert f"| CAM mIoU (best threshold) | {cam['miou'] * 100:.2f} @ {cam['best_threshold']:.2f} |" in md
    assert f"| segmentation mIoU (val) | {seg['miou'] * 100:.2f} |" in md
    assert md.strip() in out.replace("\r", "")
    assert f"CAM mIoU on train: {cam['miou'] * 100:.2f}" in out
    vis = re.search(r"visualisation: (\S+\.png)", out).group(1)
    assert os.path.isfile(vis)

    # 3) a rerun skips every stage; --force redoes the named one only (both in this process)
    out = run_script_here(*_cmd(tiny_root, work)[1:], check=True).stdout
    assert out.count("finished earlier") == 10
    out = run_script_here(*_cmd(tiny_root, work, "--force", "eval_cam", "--stages", "eval_cam,eval_pseudo")[1:], check=True).stdout
    assert "[pipeline] eval_cam ..." in out and "eval_pseudo: finished earlier" in out


ABLATION = "train_cam,make_cam,eval_cam,make_pseudo,eval_pseudo"


def _ablation_overrides(root, work, *extra):
    o = tiny_overrides(root, work, **{"train.max_steps": 1, "cam.split": "train", "pseudo.split": "train",
                                      "pipeline.visualize_ids": 1})
    return [*o, f"ppl.stages={PPL_STAGES}", *extra]


def _pipeline_cmd(root, work, *extra):
    return [sys.executable, str(REPO / "scripts/run_pipeline.py"), "--config", str(CONFIGS / "demo/demo_synthetic.yaml"),
            *_ablation_overrides(root, work), *extra]


def _script_here(root, work, *extra):
    """scripts/run_pipeline.py as __main__ in this process (its command line, exit code and
    messages; its run_script wrapper gives the lock back)."""
    return run_script_here(*_pipeline_cmd(root, work, *extra)[1:])


def _in_process(root, work, *overrides, stages=ABLATION, **kw):
    """run_pipeline in this process (the script minus its start-up); the lock is given back after."""
    from wsss.config import load_config
    from wsss.pipeline import run_pipeline
    from wsss.lock import release_all

    cfg = load_config(CONFIGS / "demo/demo_synthetic.yaml", _ablation_overrides(root, work, *overrides))
    try:
        return run_pipeline(cfg, stages.split(","), **kw)
    finally:
        release_all()


def _read(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_readme_ablation_sequence_never_reports_old_numbers(tiny_root, tmp_path, capsys):
    """The README's ablation: a config, then the same config with changed keys. In the same
    work_dir it is refused and nothing is rewritten; in its own work_dir it gives its own
    numbers; --redo-from replaces a stage and everything after it; a summary never holds a
    number made under another config."""
    a, b = tmp_path / "a", tmp_path / "b"
    # 1) the first experiment, published with the machine and the commit
    run_script_here(*_pipeline_cmd(tiny_root, a, "--stages", ABLATION, "--results", str(tmp_path / "demo.json"))[1:], check=True)
    summary = (a / "metrics" / "summary.json").read_bytes()
    s = json.loads(summary)
    cam = _read(a / "metrics" / "cam_eval.json")
    assert s["numbers"]["cam_miou"] == cam["miou"] and s["numbers"]["pseudo_miou_255_as_bg"] == \
        _read(a / "metrics" / "pseudo_eval.json")["miou_255_as_background"]
    published = _read(tmp_path / "demo.json")
    assert published["data"]["numbers"] == s["numbers"] and published["kind"] == "demo"
    assert published["commit"]["sha"] and published["made_on"]["cores"] and published["made_on"]["torch"]

    # 2) the ablation in the same work_dir: one line naming the keys and the ways out; nothing written
    before = {p: p.read_bytes() for p in (a / "pipeline").glob("*.json")}
    proc = _script_here(tiny_root, a, "ppl.restart_schedule=false", "ppl.cam_source=full", "--stages", ABLATION)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    line = lines[0]  # what matters: the file, each changed key with its values, the two ways out
    assert line.startswith("config error: ") and "/a/checkpoints/made_by.json" in line, line
    assert "ppl.cam_source: concat -> full" in line and "ppl.restart_schedule: true -> false" in line, line
    assert "work_dir=DIR" in line and "--redo-from train_cam" in line, line
    assert (a / "metrics" / "summary.json").read_bytes() == summary
    assert before == {p: p.read_bytes() for p in (a / "pipeline").glob("*.json")}

    # 3) in its own work_dir: its own numbers, stamped with its own config
    sb = _in_process(tiny_root, b, "ppl.restart_schedule=false", "ppl.cam_source=full")
    cam_b = _read(b / "metrics" / "cam_eval.json")
    assert _read(b / "metrics" / "summary.json")["numbers"] == sb["numbers"] and sb["numbers"]["cam_miou"] == cam_b["miou"]
    assert cam_b["config"]["ppl"]["cam_source"] == "full"
    assert cam_b["record"]["inputs"]["cams"]["keys"]["ppl.cam_source"] == "full"
    assert all(sb["records"][st] != s["records"][st] for st in ABLATION.split(","))

    # 4) an evaluation setting: the evaluation runs again, the rest is skipped
    capsys.readouterr()
    s4 = _in_process(tiny_root, a, "eval_cam.threshold_step=0.05", stages="eval_cam")
    assert "eval_cam: finished earlier under another config (eval_cam.threshold_step: 0.01 -> 0.05); evaluating again" \
        in capsys.readouterr().out
    cam4 = _read(a / "metrics" / "cam_eval.json")
    assert len(cam4["curve"]) == 12 and s4["numbers"]["cam_miou"] == cam4["miou"]
    assert s4["numbers"]["pseudo_miou_255_as_bg"] == s["numbers"]["pseudo_miou_255_as_bg"]  # its config: unchanged

    # 5) a key of a stage this run does not rerun: that stage's numbers are left out of the summary
    s5 = _in_process(tiny_root, a, "eval_cam.threshold_step=0.05", "pseudo.fg_thres=0.4", stages="eval_cam")
    assert set(s5["left_out"]) == {"make_pseudo", "eval_pseudo"} and "pseudo_miou_255_as_bg" not in s5["numbers"]
    assert "Left out, finished under another config (run them again): make_pseudo, eval_pseudo" in \
        (a / "metrics" / "summary.md").read_text()

    # 6) a make_cam key: refused; --redo-from make_cam removes make_cam's outputs and every later
    #    stage's, then runs under the new config (train_cam is kept)
    from wsss.records import StaleOutputError

    with pytest.raises(StaleOutputError, match=r"cams/made_by\.json: .* --redo-from make_cam .*\(cam\.scales: \[1\.0, 0\.5\] -> \[1\.0\]\)"):
        _in_process(tiny_root, a, "cam.scales=[1.0]")
    weights = (a / "checkpoints" / "final.pth").stat().st_mtime_ns
    proc = _script_here(tiny_root, a, "cam.scales=[1.0]", "--redo-from", "make_cam", "--stages", "make_cam,eval_cam")
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("--redo-from make_cam: removed what make_cam, eval_cam, make_pseudo, eval_pseudo, train_irn, make_irn_labels, "
            "eval_irn, train_seg, eval_seg had made") in out
    assert "(12 computed on rank 0" in out and (a / "checkpoints" / "final.pth").stat().st_mtime_ns == weights
    s6 = _read(a / "metrics" / "summary.json")
    assert s6["seconds"]["train_cam"] == s["seconds"]["train_cam"]
    assert s6["numbers"]["cam_miou"] == _read(a / "metrics" / "cam_eval.json")["miou"]
    assert not any(k.startswith("pseudo") for k in s6["numbers"]) and not list((a / "pseudo").glob("*.png"))
    assert sorted(p.stem for p in (a / "pipeline").glob("*.json")) == ["eval_cam", "make_cam", "train_cam"]
    assert _read(a / "cams" / "made_by.json")["keys"]["cam.scales"] == [1.0]
