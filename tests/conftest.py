"""Shared fixtures: a small synthetic mini-VOC (real files, real layout) and configs over it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# folders of configs/ that hold no experiment: _base_ (pieces to compose) and bench (the
# synthetic bench's scenes, read by scripts/compare_methods.py)
NOT_EXPERIMENTS = ("_base_", "bench")


def experiment_configs() -> list:
    """Every experiment config the repository ships (configs/**/*.yaml, not _base_ or bench)."""
    return sorted(p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] not in NOT_EXPERIMENTS)

# Keep each test process to the machine's cores without oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY = dict(seed=3, image_size=64, num_train=12, num_aug=12, num_val=8, num_test=3, num_classes=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny synthetic mini-VOC at 64 px (with a COCO-style copy)."""
    from wsss.data.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("tiny") / "VOC2012"
    generate_synthetic_voc(root, write_coco=True, **TINY)
    return root


def tiny_overrides(root: Path, work_dir: Path, **extra) -> list[str]:
    """Overrides that point a synthetic config at the tiny dataset and make every stage small."""
    o = {
        "data.root": str(root),
        "data.num_classes": TINY["num_classes"],
        **{f"data.synthetic.{k}": v for k, v in TINY.items()},
        "data.synthetic.write_coco": True,
        # the tiny tests start from random weights: the pretrained start is tests/test_pretrain.py's
        "model.weights": "none",
        "pretrain.enabled": False,
        "work_dir": str(work_dir),
        "train.batch_size": 4,
        "train.workers": 0,
        "train.epochs": 1,
        "train.aug.crop_size": 64,
        "train.log_interval": 2,
        "train.ckpt_interval": 2,
        "train.vis_interval": 0,
        "cam.workers": 0,
        "cam.scales": [1.0, 0.5],
        "pseudo.workers": 0,
        # IRN from random weights on 64 px crops (the synthetic configs' start is test_pretrain's)
        "irn.weights": "none",
        "irn.batch_size": 4,
        "irn.workers": 0,
        "irn.epochs": 1,
        "irn.radius": 5,
        "irn.aug.crop_size": 64,
        "irn.infer_canvas": 64,
        "irn.log_interval": 2,
        "runtime.progress": False,
        "runtime.tensorboard": False,
    }
    o.update(extra)
    import yaml

    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in o.items()]


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    """A loader: tiny_cfg('cam/cam_r18_synthetic.yaml', work_dir=..., key=value, ...) -> Config."""
    from wsss.config import load_config

    def make(config: str = "cam/cam_r18_synthetic.yaml", work_dir: Path | None = None, **extra):
        return load_config(CONFIGS / config, tiny_overrides(tiny_root, work_dir or tmp_path / "work", **extra))

    return make


def run_script(script: str, *args: str, check: bool = True, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=e)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_script_here(script: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """``run_script`` without a new interpreter: the script (a name in scripts/, or a path) runs
    as ``__main__`` in this process (its ``run_script`` wrapper, exit codes and messages
    included), which saves the seconds of importing torch and torchvision that each child
    costs. For short runs (refusals, errors, a rerun with nothing to do), chains of stages
    whose weights no other run must match bit for bit, and one-process references; killed
    runs, locks, DDP ranks and the full pipeline keep child processes. ``check``: a non-zero
    exit is an error showing the output. Torch's threads, RNG and
    determinism switch, the environment and the working directory are restored afterwards;
    anything but a clean exit or ``SystemExit`` propagates, as a traceback would."""
    import contextlib
    import io
    import runpy

    out, err = io.StringIO(), io.StringIO()
    argv, cwd, env, threads = sys.argv[:], os.getcwd(), dict(os.environ), torch.get_num_threads()
    deterministic, rng = torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    code, cmd = 0, [str(REPO / "scripts" / script), *args]
    try:
        sys.argv = cmd[:]
        os.chdir(REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(rng)
    if check and code != 0:
        raise AssertionError(f"{script} failed ({code}):\n{out.getvalue()[-3000:]}\n{err.getvalue()[-3000:]}")
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())


def kill_when(cmd: list[str], ready, timeout: float = 300, env: dict | None = None) -> None:
    """Start ``cmd``, SIGKILL its whole process group (as a scheduler or Ctrl-C would) as soon
    as ``ready()`` is true; an error if it finishes first or ``ready()`` never comes."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError("the run finished before it could be killed")
            if ready():
                break
            time.sleep(0.02)
        else:
            raise AssertionError("condition never met")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.2)  # let the killed group's file handles close


def finished_files(d: Path, ext: str) -> list[Path]:
    """Finished outputs (temporary files are hidden: '.name.tmp...')."""
    return [p for p in d.glob(f"*.{ext}") if not p.name.startswith(".")] if d.is_dir() else []


def assert_same_weights(a: Path, b: Path) -> None:
    """Two checkpoints hold bit-identical model tensors."""
    from wsss.engine.checkpoint import load_checkpoint

    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture
def r18(tiny_cfg):
    """A ResNet-18 CAM network of random weights, saved as the tiny config's cam.checkpoint: (cfg, model)."""
    from wsss.cam.training import build_cam_model, load_cam_model
    from wsss.engine.checkpoint import save_checkpoint

    cfg = tiny_cfg(**{"cam.scales": [1.0, 0.5, 1.5]})
    torch.manual_seed(0)
    save_checkpoint(cfg.cam.checkpoint, {"model": build_cam_model(cfg).state_dict()})
    return cfg, load_cam_model(cfg, cfg.cam.checkpoint)
