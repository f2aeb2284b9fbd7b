"""One run per work_dir: a second process fails at once naming the holder; a lock left by a
killed run is taken over with a message; the ranks of one torchrun job share the lock."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, run_script, tiny_overrides
from wsss.lock import WorkDirBusy, claim, lock_path, release_all

HOLD = """
import sys, time
from wsss.lock import claim
claim(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""
CLAIM = "import sys; from wsss.lock import claim; claim(sys.argv[1]); print('claimed')"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    return {**env, **extra}


def _holder(work: Path, **env) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True, env=_env(**env),
                            cwd=REPO, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _claim(work: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLAIM, str(work)], capture_output=True, text=True, env=_env(**env), cwd=REPO,
                          timeout=120)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_same_process_reenters_and_another_is_refused_naming_the_holder(tmp_path):
    work = tmp_path / "work"
    try:
        claim(work)
        claim(work)  # run_pipeline calls the stage functions in-process
        holder = json.loads(lock_path(work).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        other = _claim(work)
        assert other.returncode != 0
        msg = other.stderr.strip().splitlines()[-1]
        assert f"in use by pid {os.getpid()} on {socket.gethostname()} since {holder['started']}" in msg, msg
    finally:
        release_all()
    assert not lock_path(work).exists()
    assert _claim(work).stdout.strip() == "claimed"


def test_torchrun_ranks_of_one_job_share_the_lock_and_a_killed_holder_is_replaced(tmp_path):
    work = tmp_path / "work"
    job = {"TORCHELASTIC_RUN_ID": "job1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511", "WORLD_SIZE": "2"}
    rank0 = _holder(work, RANK="0", **job)
    try:
        assert json.loads(lock_path(work).read_text())["job"] == "job1@127.0.0.1:29511"
        assert _claim(work, RANK="1", **job).returncode == 0  # rank 1 of the same job: shared
        other_job = _claim(work, RANK="1", **{**job, "MASTER_PORT": "29512"})
        assert other_job.returncode != 0 and f"in use by pid {rank0.pid}" in other_job.stderr, other_job.stderr
        single = _claim(work)
        assert single.returncode != 0 and f"in use by pid {rank0.pid}" in single.stderr
    finally:
        _kill(rank0)
    # the holder was SIGKILLed: its lock file is still there, and the next run takes it over
    assert json.loads(lock_path(work).read_text())["pid"] == rank0.pid
    after = _claim(work)
    assert after.returncode == 0, after.stderr
    assert re.search(rf"\[lock\] .*\.lock: the run that held it \(pid {rank0.pid} on .*\) is gone; lock taken over", after.stderr)


def test_a_dead_jobs_lock_is_taken_over_by_rank_0_while_the_other_ranks_wait(tmp_path):
    """A lock left by a killed job (or a previous torchrun --standalone, whose run id is random):
    rank 1 of the new job starts first and must wait for its rank 0 to take it over, not fail
    on reading the dead job's lock."""
    work = tmp_path / "work"
    old = _holder(work, RANK="0", TORCHELASTIC_RUN_ID="old", MASTER_ADDR="127.0.0.1", MASTER_PORT="29513", WORLD_SIZE="2")
    _kill(old)
    job = {"TORCHELASTIC_RUN_ID": "new", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29514", "WORLD_SIZE": "2"}
    rank1 = subprocess.Popen([sys.executable, "-c", CLAIM, str(work)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env(RANK="1", **job), cwd=REPO)
    time.sleep(1.0)  # rank 1 has read the dead job's lock by now
    assert rank1.poll() is None, rank1.communicate()
    rank0 = _holder(work, RANK="0", **job)
    try:
        out, err = rank1.communicate(timeout=60)
        assert rank1.returncode == 0 and out.strip() == "claimed", err
        assert json.loads(lock_path(work).read_text())["job"] == "new@127.0.0.1:29514"
    finally:
        _kill(rank0)


def test_a_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    lock_path(work).write_text(json.dumps({"pid": 4242, "host": "node-17.cluster", "started": "2026-01-01 10:00:00",
                                           "command": "train_cam.py --config x.yaml", "job": None}))
    with pytest.raises(WorkDirBusy, match=r"in use by pid 4242 on node-17\.cluster since 2026-01-01 10:00:00 .*"
                                          r"cannot be checked from .*: if that run is gone, delete .*\.lock"):
        claim(work)


@pytest.mark.slow
def test_two_runs_on_one_work_dir_and_a_stale_lock_after_sigkill(tiny_root, tmp_path):
    """The same job submitted twice: the second fails at once naming the first; after the
    first is SIGKILLed, the next run takes the lock over with a message."""
    work = tmp_path / "work"
    args = ["--config", str(CONFIGS / "cam/cam_r18_synthetic.yaml"), *tiny_overrides(tiny_root, work, **{"train.epochs": 200})]
    first = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train_cam.py"), *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=REPO, env=_env(), start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (work / "checkpoints" / "made_by.json").is_file():
            assert first.poll() is None and time.time() < deadline, "the first run never started training"
            time.sleep(0.1)
        holder = json.loads(lock_path(work).read_text())
        assert holder["pid"] == first.pid
        second = run_script("make_cam.py", *args, check=False)
        lines = [ln for ln in second.stderr.strip().splitlines() if ln.strip()]
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        line = lines[0]  # what matters: the lock, who holds it, the ways out
        assert line.startswith("error: ") and "/work/.lock: this work_dir is in use by " in line, line
        assert f"pid {first.pid} on {holder['host']}" in line and "train_cam.py --config" in line, line
        assert "wait for that run to end" in line and "work_dir=DIR" in line, line
        assert not (work / "cams").exists()  # the second wrote nothing
    finally:
        _kill(first)
    again = run_script("visualize.py", *args, "--n", "1")
    assert re.search(rf"\[lock\] .*: the run that held it \(pid {first.pid} on .*\) is gone; lock taken over", again.stderr)
    assert len(list((work / "vis").glob("*.png"))) == 1 and not lock_path(work).exists()
