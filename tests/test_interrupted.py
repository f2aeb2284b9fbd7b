"""Interrupted runs lose nothing: the scripts run as subprocesses and are killed (SIGKILL to
the whole process group, as a scheduler or Ctrl-C would), then rerun."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFIGS, REPO, assert_same_weights, finished_files, kill_when, run_script_here, tiny_overrides
from wsss.data.cam_files import load_cam
from wsss.engine.checkpoint import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def _cmd(script: str, config: str, root: Path, work: Path, **extra) -> list[str]:
    extra = {"runtime.threads": 2, **extra}  # as OMP_NUM_THREADS in ENV, for the runs made in this process
    return [sys.executable, str(REPO / "scripts" / script), "--config", str(CONFIGS / config), *tiny_overrides(root, work, **extra)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _run_here(cmd: list[str]) -> subprocess.CompletedProcess:
    """An uninterrupted reference run, in this process (``runtime.threads`` in ``cmd`` gives it
    the children's thread count, so the same float reductions)."""
    return run_script_here(*cmd[1:], check=True)


def _no_temp_files(*dirs: Path) -> None:
    for d in dirs:
        assert not list(d.rglob(".*.tmp*")), list(d.rglob(".*.tmp*"))


def _kill_and_rerun(script: str, out: Path, ext: str, min_done: int, done_phrase: str, root: Path, work: Path,
                    extra: dict, total: int = 24) -> Path:
    """Kill ``script`` once ``min_done`` files are finished in ``out``, rerun it: the rest is
    computed, finished files are not touched, no temporary file remains."""
    cmd = _cmd(script, "cam/cam_r18_synthetic.yaml", root, work, **extra)
    kill_when(cmd, lambda: len(finished_files(out, ext)) >= min_done, env=ENV)
    before = {p.name: p.stat().st_mtime_ns for p in finished_files(out, ext)}
    assert min_done <= len(before) < total
    rerun = _run(cmd)
    assert f"({total - len(before)} {done_phrase}" in rerun.stdout
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())  # not recomputed
    _no_temp_files(out)
    return out


def test_checkpoint_write_killed_never_corrupts_previous(tmp_path):
    """Kill a process that keeps rewriting a large checkpoint at random moments: the file
    always loads and holds one complete version."""
    target = tmp_path / "ckpt.pth"
    code = (
        "import sys, torch\n"
        "from wsss.engine.checkpoint import save_checkpoint\n"
        "i = 0\n"
        "while True:\n"
        "    save_checkpoint(sys.argv[1], {'step': i, 'w': torch.full((4_000_000,), float(i))})\n"
        "    i += 1\n"
    )
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], env=ENV, start_new_session=True)
        while not target.exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(target)
        assert torch.all(state["w"] == float(state["step"]))
    # the next run clears what the killed writer left half-written
    from wsss.fileio import remove_stale_temps

    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


@pytest.mark.slow
def test_make_cam_and_make_pseudo_killed_midway(tiny_root, tmp_path):
    extra = {"train.max_steps": 2, "cam.scales": [1.0, 0.5, 1.5, 2.0], "cam.images_per_batch": 1, "pseudo.workers": 2,
             "pseudo.eval_split": ""}
    ref, work = tmp_path / "ref", tmp_path / "killed"
    _run_here(_cmd("train_cam.py", "cam/cam_r18_synthetic.yaml", tiny_root, ref, **extra))
    work.mkdir()
    (work / "checkpoints").mkdir()
    for name in ("final.pth", "made_by.json"):  # the finished training, with its record
        (work / "checkpoints" / name).write_bytes((ref / "checkpoints" / name).read_bytes())
    _run_here(_cmd("make_cam.py", "cam/cam_r18_synthetic.yaml", tiny_root, ref, **extra))
    _run_here(_cmd("make_pseudo.py", "cam/cam_r18_synthetic.yaml", tiny_root, ref, **extra))

    # make_cam, killed after a few files
    cams = _kill_and_rerun("make_cam.py", work / "cams", "npz", 3, "computed on rank 0", tiny_root, work, extra)
    for p in finished_files(ref / "cams", "npz"):
        a, b = load_cam(p), load_cam(cams / p.name)
        assert np.array_equal(a["keys"], b["keys"]) and np.array_equal(a["high_res"], b["high_res"])

    # make_pseudo (a pool of 2 CRF workers), killed after a few masks
    pseudo = _kill_and_rerun("make_pseudo.py", work / "pseudo", "png", 2, "computed", tiny_root, work, extra)
    for p in finished_files(ref / "pseudo", "png"):
        assert (pseudo / p.name).read_bytes() == p.read_bytes()


PPL_STAGES = "[{split_after: 1, grid: 2, epochs: 1}, {split_after: 2, grid: 2, epochs: 1}, {split_after: 3, grid: 2, epochs: 1}]"


@pytest.mark.slow
def test_ppl_killed_between_stages_resumes_at_the_right_stage(tiny_root, tmp_path):
    extra = {"runtime.deterministic": True}
    ref, work = tmp_path / "ref", tmp_path / "killed"

    def cmd(w):
        return _cmd("train_cam.py", "ppl/ppl_progressive_r18_synthetic.yaml", tiny_root, w, **extra) + [f"ppl.stages={PPL_STAGES}"]

    _run_here(cmd(ref))
    kill_when(cmd(work), lambda: (work / "checkpoints" / "stage1.pth").is_file(), env=ENV)
    assert not (work / "checkpoints" / "stage3.pth").exists()
    out = _run(cmd(work))
    assert "[stage1] finished earlier" in out.stdout
    assert "[stage3] done" in out.stdout
    assert_same_weights(ref / "checkpoints" / "final.pth", work / "checkpoints" / "final.pth")


@pytest.mark.slow
def test_gslm_killed_between_rounds_resumes_at_the_right_round(tiny_root, tmp_path):
    extra = {"runtime.deterministic": True, "gslm.rounds": 2, "gslm.epochs": 1, "gslm.lr": 0.01}
    ref, work = tmp_path / "ref", tmp_path / "killed"
    _run_here(_cmd("train_cam.py", "gslm/gslm_r18_synthetic.yaml", tiny_root, ref, **extra))
    kill_when(_cmd("train_cam.py", "gslm/gslm_r18_synthetic.yaml", tiny_root, work, **extra),
              lambda: (work / "checkpoints" / "slm_round1.pth").is_file(), env=ENV)
    assert not (work / "checkpoints" / "final.pth").exists()
    out = _run(_cmd("train_cam.py", "gslm/gslm_r18_synthetic.yaml", tiny_root, work, **extra))
    assert "[cam] finished earlier" in out.stdout and "[slm_round1] finished earlier" in out.stdout
    assert "[slm_round2] done" in out.stdout
    assert_same_weights(ref / "checkpoints" / "final.pth", work / "checkpoints" / "final.pth")
    for r in range(3):
        for p in (ref / "gslm" / f"round{r}" / "pseudo").glob("*.png"):
            assert (work / "gslm" / f"round{r}" / "pseudo" / p.name).read_bytes() == p.read_bytes()
    _no_temp_files(work)
