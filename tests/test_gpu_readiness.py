"""GPU readiness, checked on the CPU where it can be: AMP (bf16, fp16 with its grad scaler),
channels_last, torch.compile, persistent loader workers, and no per-step host syncs in the
training loop."""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.cam_files import load_cam
from wsss.cam.make import make_cams
from wsss.cam.training import build_cam_model, cam_phases, load_cam_model, train_cam
from wsss.engine.checkpoint import load_checkpoint, save_checkpoint
from wsss.engine.trainer import make_context, run_phases, setup_runtime

REPO = Path(__file__).resolve().parents[1]
OUR_CODE = tuple(str(REPO / d) for d in ("wsss/engine", "wsss/cam", "wsss/models", "ppl_wsss", "gslm"))


def _batch(cfg, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, cfg.train.aug.crop_size, cfg.train.aug.crop_size, generator=g)


@pytest.mark.parametrize("config", ["cam/cam_r18_synthetic.yaml", "ppl/ppl_progressive_r18_synthetic.yaml"])
def test_channels_last_and_bf16_forward_match_fp32(tiny_cfg, config):
    cfg = tiny_cfg(config)
    torch.manual_seed(0)
    model = build_cam_model(cfg).eval()
    x = _batch(cfg)
    with torch.no_grad():
        ref = model(x)["cam"]
        cl = build_cam_model(cfg).eval()
        cl.load_state_dict(model.state_dict())
        cl.to(memory_format=torch.channels_last)
        out_cl = cl(x.contiguous(memory_format=torch.channels_last))["cam"]
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out_bf16 = model(x)["cam"]
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    assert out_bf16.dtype == torch.bfloat16  # autocast really ran the convolutions in bf16
    rel = (out_bf16.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 CAM differs from fp32 by {rel:.3f} (relative L2)"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_and_channels_last_training_runs_and_learns(tiny_cfg, amp):
    # a few steps show what is asserted (finite fp32 master weights that moved); CPU fp16 is slow
    cfg = tiny_cfg(**{"runtime.amp": amp, "runtime.channels_last": True, "train.max_steps": 4, "train.lr": 0.05})
    torch.manual_seed(0)
    model = build_cam_model(cfg)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = make_context(cfg, torch.device("cpu"), "train_cam", Path(cfg.work_dir) / "checkpoints")
    final = load_checkpoint(run_phases(model, cam_phases(cfg), ctx))["model"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert all(v.dtype == init[k].dtype for k, v in final.items())  # master weights stay fp32
    assert not torch.equal(final["classifier.weight"], init["classifier.weight"])


def test_fp16_checkpoint_holds_the_grad_scaler(tiny_cfg, monkeypatch):
    from wsss.engine import trainer

    cfg = tiny_cfg(**{"runtime.amp": "fp16", "train.ckpt_interval": 1, "train.log_interval": 100, "train.max_steps": 2})
    saved = []
    real_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda p, s: (saved.append(s), real_save(p, s)))
    ctx = make_context(cfg, torch.device("cpu"), "train_cam", Path(cfg.work_dir) / "checkpoints")
    run_phases(build_cam_model(cfg), cam_phases(cfg)[:1], ctx)
    interval = [s for s in saved if "scaler" in s]
    assert interval and all(s["scaler"].get("scale", 0) > 0 for s in interval)


def test_make_cam_bf16_channels_last_close_to_fp32(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    save_checkpoint(cfg.cam.checkpoint, {"model": build_cam_model(cfg).state_dict()})
    make_cams(cfg, load_cam_model(cfg, cfg.cam.checkpoint), torch.device("cpu"), split="val", out_dir=tmp_path / "fp32")
    fast = tiny_cfg(**{"runtime.amp": "bf16", "runtime.channels_last": True})
    model = load_cam_model(fast, cfg.cam.checkpoint).to(memory_format=torch.channels_last)
    make_cams(fast, model, torch.device("cpu"), split="val", out_dir=tmp_path / "bf16")
    files = sorted((tmp_path / "fp32").glob("*.npz"))
    assert len(files) == 8
    for p in files:
        a, b = load_cam(p), load_cam(tmp_path / "bf16" / p.name)
        assert np.array_equal(a["keys"], b["keys"])
        assert b["high_res"].dtype == a["high_res"].dtype == np.float32
        assert np.abs(a["high_res"] - b["high_res"]).max() < 0.05  # normalised maps in [0, 1]


INDUCTOR = pytest.param("inductor", marks=[
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("WSSS_TEST_INDUCTOR"),
                       reason="inductor's CPU code generation takes about a minute cold; set WSSS_TEST_INDUCTOR=1"),
    pytest.mark.skipif(sys.platform != "linux" or shutil.which("g++") is None, reason="inductor needs a C++ compiler")])


@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
def test_compiled_training_matches_eager(tiny_cfg, tmp_path, backend):
    """runtime.compile: dynamo traces the model, AOT autograd makes its backward, and two steps
    end at the eager weights, saved without the compiled wrapper's prefixes. aot_eager runs
    those graphs without code generation (on the GPU inductor generates Triton, not the C++
    it would make here)."""
    def run(compile_: bool, tag: str) -> dict:
        # lr 0.01: at the synthetic recipe's 0.1 (1.0 for the head) two steps of random-init
        # training amplify float reordering past any useful tolerance
        cfg = tiny_cfg(**{"runtime.compile": compile_, "runtime.compile_backend": backend, "runtime.deterministic": True,
                          "train.max_steps": 2, "train.lr": 0.01}, work_dir=tmp_path / tag)
        torch.manual_seed(0)
        return load_checkpoint(train_cam(cfg, setup_runtime(cfg)))["model"]

    torch._dynamo.reset()
    try:
        eager, compiled = run(False, "eager"), run(True, "compiled")
    finally:
        torch._dynamo.reset()
    assert set(eager) == set(compiled)  # no "_orig_mod." prefixes in the checkpoint
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-3, atol=1e-4, msg=k)


def test_persistent_loader_workers_give_the_same_run(tiny_cfg, tmp_path):
    """Two epochs with 2 persistent worker processes train on exactly the data of workers=0."""
    finals = []
    for workers in (0, 2):
        cfg = tiny_cfg(**{"train.workers": workers, "train.epochs": 2, "runtime.persistent_workers": True,
                          "runtime.deterministic": True},
                       work_dir=tmp_path / f"w{workers}")
        torch.manual_seed(0)
        finals.append(load_checkpoint(train_cam(cfg, setup_runtime(cfg)))["model"])
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


class _SyncCounter:
    """Counts tensor -> host conversions (item, tolist, bool, float, int) made directly by our code."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in self.METHODS:
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def counted(t, *a, **k):
            caller = sys._getframe(1).f_code
            # the sampler's per-epoch permutation is made on the host by design: not a device sync
            if caller.co_filename.startswith(OUR_CODE) and not caller.co_filename.endswith("sampler.py"):
                self.calls.append(f"{name} in {Path(caller.co_filename).name}:{caller.co_name}")
            return real(t, *a, **k)

        return counted


@pytest.mark.parametrize("config", ["cam/cam_r18_synthetic.yaml", "ppl/ppl_progressive_r18_synthetic.yaml"])
def test_training_loop_syncs_only_at_logging_intervals(tiny_cfg, monkeypatch, tmp_path, config):
    counts = []
    for steps in (3, 9):
        cfg = tiny_cfg(config, **{"train.log_interval": 1000, "train.ckpt_interval": 0},
                       work_dir=tmp_path / f"s{steps}")
        ctx = make_context(cfg, torch.device("cpu"), "train_cam", Path(cfg.work_dir) / "checkpoints")
        phase = cam_phases(cfg)[0]
        phase = dataclasses.replace(phase, schedule=dataclasses.replace(
            phase.schedule, epochs=100, max_steps=steps, log_interval=1000, ckpt_interval=0))
        model = build_cam_model(cfg)
        counter = _SyncCounter(monkeypatch)
        run_phases(model, [phase], ctx)
        monkeypatch.undo()
        counts.append(counter.calls)
    # the same handful of syncs (the end-of-phase check and summary) whatever the number of steps
    assert len(counts[0]) == len(counts[1]), f"3 steps: {counts[0]}\n9 steps: {counts[1]}"
    assert len(counts[1]) <= 3, counts[1]


def test_seed_reactivation_loss_makes_no_host_sync(monkeypatch):
    from gslm.loss import seed_reactivation_loss

    g = torch.Generator().manual_seed(0)
    cam = torch.randn(3, 4, 8, 8, generator=g, requires_grad=True)
    mask = torch.randint(0, 5, (3, 32, 32), generator=g)
    mask[0, :16] = 255
    labels = (torch.rand(3, 4, generator=g) > 0.5).float()
    counter = _SyncCounter(monkeypatch)
    loss = seed_reactivation_loss(cam, mask, labels)
    loss.backward()
    monkeypatch.undo()
    assert counter.calls == []


def test_deterministic_mode_warns_on_cuda_where_no_kernel_exists_and_stays_strict_on_the_cpu():
    """runtime.deterministic on CUDA: ops without a deterministic CUDA kernel (the SR loss's
    adaptive max pool backward, DeepLab's interpolate backward and NLL loss) warn instead of
    stopping the run; on the CPU every op has one and a missing one stays an error."""
    from wsss.engine.trainer import set_determinism

    try:
        set_determinism(torch.device("cuda", 0), True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        set_determinism(torch.device("cpu"), True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        set_determinism(torch.device("cpu"), False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_ranks_never_remove_each_others_temporary_files(tiny_root, tmp_path):
    """make_cam and make_pseudo under two gloo ranks into one folder: leftover temporary files
    are removed by one rank before any rank writes, never while another rank's file is
    half-written; every file is made once and no temporary file is left."""
    import os
    import subprocess
    import sys

    from conftest import CONFIGS, REPO, finished_files, tiny_overrides

    work = tmp_path / "ddp_temps"
    (work / "cams").mkdir(parents=True)
    (work / "cams" / ".2007_000000.npz.killed.tmp.npz").write_bytes(b"a killed run's")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29735",
           str(REPO / "tests/ddp_temps_worker.py"), str(CONFIGS / "cam/cam_r18_synthetic.yaml"),
           *tiny_overrides(tiny_root, work, **{"runtime.device": "cpu", "cam.scales": [1.0]})]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "rank 0 done" in out.stdout and "rank 1 done" in out.stdout
    assert len(finished_files(work / "cams", "npz")) == 12 and len(finished_files(work / "pseudo", "png")) == 12
    assert not list(work.rglob(".*.tmp*"))


def test_worker_counts_default_to_the_node_shared_by_its_ranks(monkeypatch):
    """train/cam/pseudo/seg.workers = -1 (the default): the node's cores over the ranks torchrun
    started on it (4 ranks x 8 CRF workers on 16 cores was 32 processes); rank 0's evaluations,
    while the others wait, take the whole node; a set value is used as it is."""
    from wsss.config import CamConfig, PseudoConfig, SegConfig, TrainConfig
    from wsss.parallel import node_cores, workers_for

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    cores = node_cores()
    assert workers_for(-1) == max(1, cores // 4) and workers_for(-1, whole_node=True) == cores
    assert workers_for(3) == 3 and workers_for(0) == 0
    assert TrainConfig().workers == CamConfig().workers == PseudoConfig().workers == SegConfig().workers == -1


@pytest.mark.slow
def test_check_gpu_runs_its_cpu_parts_here(tmp_path):
    """scripts/check_gpu.py on a machine without CUDA: its own data, the whole pipeline as two
    gloo ranks, the CRF at 1 and 2 workers; the CUDA parts listed as skipped."""
    import json

    from conftest import run_script

    out = tmp_path / "check"
    proc = run_script("check_gpu.py", "--cpu", "--out", str(out), "--steps", "2")
    res = json.loads((out / "check_gpu.json").read_text())
    assert res["ok"] and "check_gpu: ok" in proc.stdout
    run = res["runs"]["gloo_2_ranks_cpu"]
    assert run["ranks"] == 2 and set(run["seconds"]) >= {"train_cam", "make_cam", "eval_cam", "make_pseudo", "train_seg", "eval_seg"}
    assert {"train_cam_stage1", "train_cam_stage3", "train_seg_deeplab"} <= set(run["training_phases"])
    assert all(0 <= p["data_wait_share"] <= 1 for p in run["training_phases"].values())
    assert res["crf_images_per_s"]["workers_1"] > 0
    assert "NCCL (no CUDA)" in res["skipped"] and "torch.compile" in res["skipped"]
