import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFIGS, REPO, assert_same_weights, kill_when, run_script_here, tiny_overrides
from wsss.engine.checkpoint import load_checkpoint
from wsss.engine.optim import build_poly, build_sgd
from wsss.engine.sampler import ResumableSampler


def test_sampler_resume_and_sharding():
    full = list(ResumableSampler(10, seed=3))
    s = ResumableSampler(10, seed=3)
    s.set_epoch(0, skip=4)
    assert list(s) == full[4:]
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in full]  # a new order each epoch
    r0, r1 = ResumableSampler(9, rank=0, world_size=2), ResumableSampler(9, rank=1, world_size=2)
    a, b = [i for i, _ in r0], [i for i, _ in r1]
    assert len(a) == len(b) == 5 and set(a) | set(b) == set(range(9))


def test_poly_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_sgd([{"params": [p], "lr_mult": 10.0}], lr=0.1, momentum=0.0, weight_decay=0.0)
    sched = build_poly(opt, 10, 0.9)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(1.0 * (1 - 5 / 10) ** 0.9)


def _train_cmd(root: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts/train_cam.py"), "--config", str(CONFIGS / "cam/cam_r18_synthetic.yaml"),
            *tiny_overrides(root, work, **{"train.epochs": 3, "runtime.deterministic": True, "train.ckpt_interval": 2,
                                           "runtime.threads": 2}), *extra]


def test_killed_and_resumed_run_equals_uninterrupted(tiny_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    ref = tmp_path / "ref"
    run_script_here(*_train_cmd(tiny_root, ref)[1:], check=True)  # uninterrupted, in this process
    work = tmp_path / "killed"
    last = work / "checkpoints" / "last.pth"
    kill_when(_train_cmd(tiny_root, work), lambda: last.is_file() and load_checkpoint(last)["step"] >= 6, timeout=240, env=env)
    assert not (work / "checkpoints" / "final.pth").exists()
    step = load_checkpoint(last)["step"]
    assert 6 <= step < 18
    out = subprocess.run(_train_cmd(tiny_root, work), check=True, capture_output=True, text=True, env=env, timeout=300)
    assert f"resumed from {last} at step" in out.stdout
    assert_same_weights(ref / "checkpoints" / "final.pth", work / "checkpoints" / "final.pth")


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg):
    from wsss.cam.training import build_cam_model, classification_dataset, classification_loss, cam_param_groups
    from wsss.engine.trainer import NonFiniteLossError, Phase, Schedule, make_context, run_phases

    cfg = tiny_cfg()
    ctx = make_context(cfg, torch.device("cpu"), "train_cam", Path(cfg.work_dir) / "checkpoints")
    calls = {"n": 0}

    def loss_with_fault(net, batch, ctx):
        terms = classification_loss(net, batch, ctx)
        calls["n"] += 1
        if calls["n"] == 6:  # step index 5
            terms["sr"] = terms["loss"] * float("nan")
        else:
            terms["sr"] = terms["loss"] * 0
        terms["loss"] = terms["loss"] + terms["sr"]
        return terms

    phase = Phase("cam", Schedule(epochs=3, batch_size=4, workers=0, lr=0.01, log_interval=100, ckpt_interval=2),
                  lambda c: classification_dataset(c.cfg), loss_with_fault, lambda m: cam_param_groups(m, 10.0))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss term 'sr' at step 5; .*last good checkpoint: .*last.pth \(step 4\)"):
        run_phases(build_cam_model(cfg), [phase], ctx)
    state = load_checkpoint(Path(cfg.work_dir) / "checkpoints" / "last.pth")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (Path(cfg.work_dir) / "checkpoints" / "final.pth").exists()


def _two_gloo_ranks(worker: str, port: int, overrides: list[str]) -> None:
    """tests/<worker> under torchrun with 2 CPU processes on the baseline CAM config."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(REPO / "tests" / worker), str(CONFIGS / "cam/cam_r18_synthetic.yaml"), *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_ddp_two_gloo_ranks_hold_equal_weights(tiny_root, tmp_path):
    work = tmp_path / "ddp"
    _two_gloo_ranks("ddp_worker.py", 29731, tiny_overrides(tiny_root, work, **{"train.max_steps": 3, "runtime.device": "cpu"}))
    a = torch.load(work / "rank0.pth", weights_only=True)
    b = torch.load(work / "rank1.pth", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert np.isfinite(sum(float(v.float().sum()) for v in a.values()))


@pytest.mark.slow
def test_ddp_ranks_agree_on_a_nonfinite_loss_before_a_checkpoint(tiny_root, tmp_path):
    """One rank's NaN reaches every rank's weights through the averaged gradients: both ranks
    stop at the same check, and rank 0 never writes a checkpoint of the poisoned weights."""
    work = tmp_path / "ddp_nan"
    _two_gloo_ranks("ddp_nan_worker.py", 29733, tiny_overrides(tiny_root, work, **{"runtime.device": "cpu"}))
    for rank in (0, 1):
        assert "non-finite loss term 'sr' at step 5" in (work / f"stopped{rank}").read_text()
    state = load_checkpoint(work / "checkpoints" / "last.pth")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
