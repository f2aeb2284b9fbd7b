"""The training loop every method shares.

A training run is a list of :class:`Phase` objects trained one after another on
one model: the baseline CAM network has one phase, PPL progressive one per
stage, GSLM appends one per SLM round, DeepLab has one. Per phase the engine
builds the loader, SGD + poly schedule and (under torchrun) DDP, and keeps:

    <ckpt_dir>/last.pth       model + optimizer + scheduler + step + RNG + config (every ckpt_interval)
    <ckpt_dir>/<phase>.pth    the weights at the end of each phase
    <ckpt_dir>/final.pth      the weights after the last phase

A rerun skips finished phases (their weights are loaded) and resumes the
unfinished one from ``last.pth``. A phase's ``setup`` and ``finish`` hooks run
for skipped phases too and must be idempotent.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from wsss import layout
from wsss.config import Config, ScheduleConfig, to_dict
from wsss.engine.checkpoint import load_checkpoint, model_state, rng_state, save_checkpoint, set_rng_state, unwrap
from wsss.engine.distributed import get_rank, get_world_size, init_distributed, is_distributed, select_device
from wsss.engine.optim import build_poly, build_sgd
from wsss.engine.sampler import ResumableSampler
from wsss.fileio import remove_stale_temps
from wsss.parallel import retain_freed_memory, workers_for


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stopped, the last good checkpoint is kept."""


@dataclass
class Schedule(ScheduleConfig):
    """A phase's schedule as the loop runs it: a config section's :class:`ScheduleConfig`
    fields plus the loop's own (step cap, loader workers, intervals, the poly span)."""

    epochs: int = 0
    max_steps: int = 0  # > 0 caps the total (smoke runs)
    workers: int = -1  # -1: the node's cores over its ranks (wsss.parallel.workers_for)
    poly_span: tuple = (0.0, 1.0)  # the share of a longer poly decay this phase covers
    log_interval: int = 20
    ckpt_interval: int = 200
    vis_interval: int = 0
    val_interval: int = 0

    @classmethod
    def from_config(cls, section: ScheduleConfig, loop: Any = None, **overrides) -> "Schedule":
        """The schedule of ``section`` (``cfg.train``, ``cfg.seg``, ``cfg.gslm``), with the loop
        settings that ``loop`` (default: the section itself) has, then ``overrides``."""
        loop = section if loop is None else loop
        values = {f.name: getattr(section, f.name) for f in fields(ScheduleConfig)}
        values.update({f.name: getattr(loop, f.name) for f in fields(cls)
                       if f.name not in values and hasattr(loop, f.name)})
        return cls(**{**values, **overrides})


@dataclass
class Phase:
    name: str
    schedule: Schedule
    build_dataset: Callable[["TrainContext"], Dataset]
    compute_loss: Callable[[nn.Module, dict, "TrainContext"], dict]  # -> {"loss": total, term: value, ...}
    param_groups: Callable[[nn.Module], list]
    setup: Optional[Callable[[nn.Module, "TrainContext"], None]] = None
    finish: Optional[Callable[[nn.Module, "TrainContext"], None]] = None
    # (model, batch, outputs) -> HWC uint8 image for TensorBoard
    visualize: Optional[Callable[[nn.Module, dict, dict], Optional[np.ndarray]]] = None
    validate: Optional[Callable[[nn.Module, "TrainContext"], dict]] = None
    seed_offset: int = 0
    batch_key: str = "train.batch_size"  # the config key of its global batch (messages name it)


@dataclass
class TrainContext:
    cfg: Config
    device: torch.device
    stage: str  # the stage that trains (its phases' metrics files are named after it)
    ckpt_dir: Path
    tb_dir: Optional[Path]
    rank: int = 0
    world_size: int = 1
    writer: Any = None
    state: dict = field(default_factory=dict)  # free space for phases (e.g. the last outputs)
    # called as hook(step) after every optimisation step (e.g. a benchmark's clock)
    step_hooks: list = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def metrics_dir(self) -> Path:
        return layout.metrics_dir(self.cfg)

    def log(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def autocast(self):
        amp = self.cfg.runtime.amp
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def setup_runtime(cfg: Config, autotune: bool = False) -> torch.device:
    """Device, distributed init, threads, the determinism switch and the seed. ``autotune``:
    cudnn's autotuner, for work whose shapes repeat (training on fixed crops); make_cam and
    the evaluations see a new shape with nearly every image, and each would be tuned anew."""
    device = select_device(cfg.runtime.device)
    init_distributed(device, cfg.runtime.dist_backend)
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    set_determinism(device, cfg.runtime.deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and autotune and not cfg.runtime.deterministic
    seed = cfg.seed + get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    import random

    random.seed(seed)
    return device


def set_determinism(device: torch.device, on: bool) -> None:
    """runtime.deterministic: deterministic kernels everywhere. On the CPU every op used here
    has one, and a missing one is an error; on CUDA some have none (adaptive max pool's
    backward in the SR loss, interpolate's backward and the NLL loss in DeepLab), so those
    warn and run their usual kernel instead of stopping the run."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=on and device.type == "cuda")


def make_context(cfg: Config, device: torch.device, stage: str, ckpt_dir: Path, tb_name: str = "tb") -> TrainContext:
    """The training context of a stage (train_cam, train_seg): its checkpoints in ``ckpt_dir``,
    each phase's numbers as metrics/<stage>_<phase>.json, TensorBoard in <work_dir>/<tb_name>."""
    ctx = TrainContext(cfg=cfg, device=device, stage=stage, ckpt_dir=Path(ckpt_dir),
                       tb_dir=layout.tensorboard(cfg, tb_name) if cfg.runtime.tensorboard else None,
                       rank=get_rank(), world_size=get_world_size())
    if ctx.is_main:
        ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
        ctx.metrics_dir.mkdir(parents=True, exist_ok=True)
        if ctx.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            ctx.writer = SummaryWriter(str(ctx.tb_dir))
    return ctx


def _move(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class _FiniteWatch:
    """Tracks, on the device, the first step at which each loss term was not finite.

    Checked (a host sync) only at logging intervals and before every checkpoint.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.names: list[str] = []
        self.first_bad: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0

    def update(self, terms: dict, step: int) -> None:
        if self.first_bad is None:
            self.names = list(terms)
            self.first_bad = torch.full((len(self.names),), -1, dtype=torch.long, device=self.device)
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        vals = torch.stack([terms[n].detach().float().reshape(()) for n in self.names])
        bad = ~torch.isfinite(vals)
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step), self.first_bad)
        self.sums += vals.double()
        self.count += 1

    def check(self, last_good: str) -> None:
        """Raise when a term was not finite on any rank: every rank calls it at the same steps,
        and under DDP the ranks agree first (one rank's inf reaches every rank's weights through
        the averaged gradients, so rank 0 must not checkpoint them)."""
        if self.first_bad is None:
            return
        fb = self.first_bad
        if is_distributed():
            never = torch.iinfo(torch.long).max
            fb = torch.where(fb < 0, torch.full_like(fb, never), fb)
            if fb.device.type == "cpu" or torch.distributed.get_backend() != "gloo":
                torch.distributed.all_reduce(fb, op=torch.distributed.ReduceOp.MIN)
            else:  # gloo reduces CPU tensors only
                cpu = fb.cpu()
                torch.distributed.all_reduce(cpu, op=torch.distributed.ReduceOp.MIN)
                fb = cpu.to(fb.device)
            fb = torch.where(fb == never, torch.full_like(fb, -1), fb)
        fb = fb.tolist()
        bad = [(s, n) for s, n in zip(fb, self.names) if s >= 0]
        if bad:
            # name the specific term rather than the total when both went bad at the same step
            s, n = min(bad, key=lambda b: (b[0], b[1] == "loss"))
            raise NonFiniteLossError(f"non-finite loss term '{n}' at step {s}; training stopped; last good checkpoint: {last_good}")

    def means(self) -> dict:
        if not self.count:
            return {}
        vals = (self.sums / self.count).tolist()
        self.sums.zero_()
        self.count = 0
        return dict(zip(self.names, vals))


def _phase_state_path(ctx: TrainContext, phase: Phase) -> Path:
    return ctx.ckpt_dir / f"{phase.name}.pth"


def run_phases(model: nn.Module, phases: list[Phase], ctx: TrainContext, resume: bool = True,
               final_path: Path | None = None, final_meta: dict | None = None) -> Path:
    """Train ``phases`` in order on ``model``; returns the final checkpoint's path."""
    model.to(ctx.device)
    if ctx.cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    last_path = ctx.ckpt_dir / "last.pth"
    if ctx.is_main:
        remove_stale_temps(ctx.ckpt_dir)
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique: {names}")
    resume_state = None
    if resume and last_path.is_file():
        resume_state = load_checkpoint(last_path)
    for phase in phases:
        done = _phase_state_path(ctx, phase)
        if phase.setup:
            phase.setup(model, ctx)
        if done.is_file():
            unwrap(model).load_state_dict(load_checkpoint(done)["model"])
            ctx.log(f"[{phase.name}] finished earlier; weights loaded from {done}")
        else:
            state = resume_state if resume_state and resume_state.get("phase") == phase.name else None
            train_phase(model, phase, ctx, state, last_path)
            if ctx.is_main:
                save_checkpoint(done, {"model": model_state(model), "phase": phase.name, "config": to_dict(ctx.cfg)})
                if last_path.is_file():
                    last_path.unlink()
            _barrier()
        if phase.finish:
            phase.finish(model, ctx)
    final_path = final_path or ctx.ckpt_dir / "final.pth"
    if ctx.is_main:
        meta = dict(final_meta or {})
        save_checkpoint(final_path, {"model": model_state(model), **meta, "config": to_dict(ctx.cfg)})
        ctx.log(f"final weights: {final_path}")
    _barrier()
    return final_path


def _barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def train_phase(model: nn.Module, phase: Phase, ctx: TrainContext, state: dict | None, last_path: Path) -> dict:
    # Each step frees and reallocates the same large activations; kept in the heap, they
    # come back without page faults (the values are unchanged, see retain_freed_memory).
    with retain_freed_memory():
        return _train_phase(model, phase, ctx, state, last_path)


def _train_phase(model: nn.Module, phase: Phase, ctx: TrainContext, state: dict | None, last_path: Path) -> dict:
    """One phase as a recipe: data -> optimiser -> (resume) -> wrapped model -> step loop.
    Logging, visualisation and validation live in :class:`_Monitor`; callers measure from
    outside through ``ctx.step_hooks``."""
    cfg, sched, device = ctx.cfg, phase.schedule, ctx.device
    loader, sampler, per_rank_batch, steps_per_epoch, total = _data(phase, ctx)
    bare = unwrap(model)
    bare.train()
    optimizer, scheduler, scaler = _optimisation(bare, phase, total, cfg.runtime.amp, device)
    step = 0 if state is None else _restore(state, bare, optimizer, scheduler, scaler)
    if state is not None:
        ctx.log(f"[{phase.name}] resumed from {last_path} at step {step}/{total}")
    net = _wrap(bare, cfg, device)

    watch = _FiniteWatch(device)
    monitor = _Monitor(phase, ctx, total, step, per_rank_batch * ctx.world_size)
    last_good = str(last_path) if last_path.is_file() else "none yet"
    step0, t_start = step, time.perf_counter()

    def save_last() -> None:
        nonlocal last_good
        watch.check(last_good)
        if ctx.is_main:
            save_checkpoint(last_path, {
                "phase": phase.name, "step": step, "model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": rng_state(), "config": to_dict(cfg),
            })
        last_good = f"{last_path} (step {step})"

    while step < total:
        sampler.set_epoch(step // steps_per_epoch, skip=(step % steps_per_epoch) * per_rank_batch)
        for batch in monitor.timed(loader):
            batch = _move(batch, device, cfg.runtime.channels_last)
            terms = _step(net, batch, phase, ctx, optimizer, scaler, scheduler)
            watch.update(terms, step)
            step += 1
            for hook in ctx.step_hooks:
                hook(step)
            monitor.after_step(step, batch, bare, optimizer, watch, last_good)
            if sched.ckpt_interval and step % sched.ckpt_interval == 0 and step < total:
                save_last()
            if step >= total:
                break
    monitor.close()
    watch.check(last_good)
    if is_distributed():
        # parameters agree through DDP; BN running statistics are per rank: take rank 0's
        for buf in bare.buffers():
            torch.distributed.broadcast(buf, 0)
    seconds = time.perf_counter() - t_start
    summary = {**monitor.summary, "phase": phase.name, "steps": total, "steps_this_run": step - step0,
               "seconds_this_run": round(seconds, 2), "images_per_s_this_run": (step - step0) * sched.batch_size / max(seconds, 1e-9)}
    ctx.log(f"[{phase.name}] done: {total} steps, {summary['images_per_s_this_run']:.1f} images/s, {seconds:.1f} s")
    if ctx.is_main:
        from wsss.reports import save_json

        save_json(cfg, layout.phase_metrics(cfg, ctx.stage, phase.name), summary)
    return summary


def _step(net: nn.Module, batch: dict, phase: Phase, ctx: TrainContext, optimizer, scaler, scheduler) -> dict:
    """One optimisation step; returns the loss terms (tensors: no host sync here)."""
    with ctx.autocast():
        terms = phase.compute_loss(net, batch, ctx)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return terms


def _data(phase: Phase, ctx: TrainContext):
    """The phase's loader over a resumable sampler sharded across ranks, and the step count:
    (loader, sampler, per-rank batch, steps per epoch, total steps)."""
    cfg, sched = ctx.cfg, phase.schedule
    check_batch(phase, ctx.world_size)
    dataset = phase.build_dataset(ctx)
    per_rank_batch = sched.batch_size // ctx.world_size
    sampler = ResumableSampler(len(dataset), seed=cfg.seed + 1000 * phase.seed_offset, rank=ctx.rank, world_size=ctx.world_size)
    steps_per_epoch = sampler.per_rank // per_rank_batch
    if steps_per_epoch == 0:
        raise ValueError(f"[{phase.name}] {len(dataset)} training images are fewer than one batch of {sched.batch_size}")
    total = sched.iterations if sched.iterations > 0 else sched.epochs * steps_per_epoch
    if sched.max_steps > 0:
        total = min(total, sched.max_steps)
    workers = workers_for(sched.workers)
    loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=cfg.runtime.pin_memory and ctx.device.type == "cuda",
                        persistent_workers=cfg.runtime.persistent_workers and workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    return loader, sampler, per_rank_batch, steps_per_epoch, total


def check_batch(phase: Phase, world: int) -> None:
    """A phase's global batch splits evenly over the ranks (each rank takes batch / world);
    a ConfigError naming the key and what works, before anything is computed."""
    from wsss.config import ConfigError

    b = phase.schedule.batch_size
    if b % world == 0:
        return
    ranks = [d for d in range(1, b + 1) if b % d == 0]
    down, up = (b // world) * world, (b // world + 1) * world
    near = f"{down} or {up}" if down else f"{up}"
    raise ConfigError(f"{phase.batch_key}: {b} ({phase.name}) is not divisible by the {world} ranks of this job; "
                      f"set it to a multiple of {world} ({near}), or run it on {', '.join(map(str, ranks))} ranks")


def _optimisation(bare: nn.Module, phase: Phase, total: int, amp: str, device: torch.device):
    """SGD over the phase's parameter groups, its poly decay over ``total`` steps, the fp16 grad scaler."""
    sched = phase.schedule
    optimizer = build_sgd(phase.param_groups(bare), sched.lr, sched.momentum, sched.weight_decay, sched.nesterov)
    scheduler = build_poly(optimizer, total, sched.poly_power, tuple(sched.poly_span))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return optimizer, scheduler, scaler


def _restore(state: dict, bare: nn.Module, optimizer, scheduler, scaler) -> int:
    """Load a ``last.pth`` state (weights, optimiser, schedule, scaler, RNG); returns its step."""
    bare.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def _wrap(bare: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """The module the steps run: SyncBatchNorm under DDP on CUDA, torch.compile, DDP."""
    if is_distributed() and cfg.runtime.sync_bn and device.type == "cuda":
        # trainable BN (frozen BN never changes) then sees the global batch
        nn.SyncBatchNorm.convert_sync_batchnorm(bare)
    net: nn.Module = torch.compile(bare, backend=cfg.runtime.compile_backend) if cfg.runtime.compile else bare
    if is_distributed():
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net


class _Monitor:
    """What a phase reports while it runs: the progress bar, the loss and throughput window
    (every ``log_interval`` steps, the only host syncs), TensorBoard scalars and CAM overlays,
    and periodic validation."""

    def __init__(self, phase: Phase, ctx: TrainContext, total: int, step: int, images_per_step: int):
        self.phase, self.ctx, self.total, self.images_per_step = phase, ctx, total, images_per_step
        self.progress = None
        if ctx.is_main and ctx.cfg.runtime.progress:
            from tqdm import tqdm

            self.progress = tqdm(total=total, initial=step, desc=phase.name, dynamic_ncols=True, leave=True)
        self.t_window, self.images, self.data_wait = time.perf_counter(), 0, 0.0
        self.summary: dict = {}

    def timed(self, loader):
        """The loader's batches, adding the time spent waiting for each to the window."""
        t = time.perf_counter()
        for batch in loader:
            self.data_wait += time.perf_counter() - t
            yield batch
            t = time.perf_counter()

    def after_step(self, step: int, batch: dict, bare: nn.Module, optimizer, watch: "_FiniteWatch", last_good: str) -> None:
        sched, ctx, name = self.phase.schedule, self.ctx, self.phase.name
        self.images += self.images_per_step
        if self.progress is not None:
            self.progress.update(1)
        if step % sched.log_interval == 0 or step == self.total:
            watch.check(last_good)
            self._log(step, watch.means(), optimizer)
        if sched.vis_interval and self.phase.visualize and ctx.writer is not None and step % sched.vis_interval == 0:
            with torch.no_grad():
                img = self.phase.visualize(bare, batch, {})
            if img is not None:
                ctx.writer.add_image(f"{name}/cam", img, step, dataformats="HWC")
        if sched.val_interval and self.phase.validate and step % sched.val_interval == 0 and step < self.total:
            metrics = self.phase.validate(bare, ctx)
            bare.train()
            ctx.log(f"[{name}] step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if ctx.writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        ctx.writer.add_scalar(f"{name}/val_{k}", v, step)

    def _log(self, step: int, means: dict, optimizer) -> None:
        name, writer = self.phase.name, self.ctx.writer
        elapsed = time.perf_counter() - self.t_window
        ips = self.images / max(elapsed, 1e-9)
        self.summary = {**means, "images_per_s": ips, "data_wait_fraction": self.data_wait / max(elapsed, 1e-9)}
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", ips=f"{ips:.1f}")
        if writer is not None:
            for k, v in means.items():
                writer.add_scalar(f"{name}/{k}", v, step)
            for i, g in enumerate(optimizer.param_groups):
                writer.add_scalar(f"{name}/lr_{g.get('name') or i}", g["lr"], step)
            writer.add_scalar(f"{name}/images_per_s", ips, step)
        self.t_window, self.images, self.data_wait = time.perf_counter(), 0, 0.0

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()