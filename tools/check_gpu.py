"""Does this machine run the project, and how fast? (scripts/check_gpu.py)

On a CUDA machine, in about ten minutes on one GPU and its CPUs:

1. a small VOC-sized synthetic dataset (20 classes, 500 px long sides) made here;
2. the pipeline (PPL progressive's three phases -> make_cam -> eval_cam -> make_pseudo ->
   eval_pseudo -> IRN -> DeepLab -> eval_seg, ResNet-50 / ResNet-101 from random weights, a few
   steps each) under ``torchrun --nproc_per_node=1`` with NCCL, bf16 autocast and
   channels_last; and again as two gloo ranks on the one GPU with fp16 and torch.compile;
3. while they run, the GPU's utilisation (nvidia-smi, every 0.25 s);
4. the CRF (make_pseudo's two label CRFs per image): pydensecrf at 1, 8 and 16 worker
   processes (at most the usable cores), and on CUDA the torch CRF on the GPU;
5. cudnn's autotuning: the first training steps with it and without it.

It prints and writes ``<out>/check_gpu.json``: images/s per stage and run, the share of each
training phase spent waiting for data, the GPU's idle share, CRF images/s per worker count,
the autotuning's cost. On a machine without CUDA it runs the CPU parts at a small size
(ResNet-18, 128 px: what CI runs) and lists the CUDA parts as skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Settings:
    out: str = "work_dirs/check_gpu"
    cuda: bool = True  # False: the CPU parts only, small
    steps: int = 6  # training steps per phase
    seg_steps: int = 6
    images: int = 24  # train_aug (half of it also train)
    crf_images: int = 32
    crf_workers: list[int] = field(default_factory=lambda: [1, 8, 16])
    timeout_s: int = 420  # per pipeline run


def _data_overrides(s: Settings, root: Path) -> list[str]:
    n = s.images // 2
    common = [f"data.root={root}", "data.dataset=synthetic", "data.synthetic.seed=11", f"data.synthetic.num_train={n}",
              f"data.synthetic.num_aug={s.images - n}", "data.synthetic.num_val=8", "data.synthetic.num_test=2"]
    if s.cuda:  # VOC's classes and image sizes, the VOC recipe's networks
        return common + ["data.num_classes=20", "data.synthetic.num_classes=20", "data.synthetic.voc_sizes=true"]
    return common + ["data.num_classes=5", "data.synthetic.num_classes=5", "data.synthetic.image_size=128"]


def _config(s: Settings) -> str:
    return str(REPO / ("configs/ppl/ppl_progressive_r50_voc12.yaml" if s.cuda else "configs/demo/demo_synthetic.yaml"))


def _run_overrides(s: Settings, work: Path) -> list[str]:
    o = [f"work_dir={work}", "model.weights=none", "seg.weights=none", "irn.weights=none", "pretrain.enabled=false",
         f"train.max_steps={s.steps}", "irn.batch_size=4", "irn.split=train_aug",
         "ppl.stages=[{split_after: 1, grid: 2, epochs: 1}, {split_after: 2, grid: 2, epochs: 1}, {split_after: 3, grid: 2, epochs: 1}]",
         f"seg.iterations={s.seg_steps}", "seg.batch_size=4", "seg.scales=[1.0]", "seg.test_split=", "train.batch_size=4",
         "runtime.tensorboard=false", "runtime.progress=false", "train.log_interval=2", "seg.log_interval=2",
         "cam.split=train_aug", "pseudo.split=train_aug", "seg.train_split=train_aug"]
    if not s.cuda:
        o += ["cam.scales=[1.0,0.5]", "train.workers=1", "seg.workers=1", "cam.workers=0", "pseudo.workers=1", "irn.workers=1",
              "irn.aug.crop_size=128", "irn.infer_canvas=128", "irn.radius=5",
              "runtime.device=cpu", "runtime.threads=1", "seg.iterations=2", "pipeline.visualize_ids=1"]
    return o


class GpuSampler:
    """nvidia-smi's utilisation of GPU 0, sampled every 0.25 s while a run goes on."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None

    def __enter__(self) -> "GpuSampler":
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "--id=0", "-lms", "250"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_idle_share": None, "gpu_mean_utilisation": None, "samples": 0}
        return {"gpu_idle_share": sum(u < 5 for u in self.samples) / len(self.samples),
                "gpu_mean_utilisation": sum(self.samples) / len(self.samples) / 100, "samples": len(self.samples)}


def run_pipeline(s: Settings, name: str, ranks: int, extra: list[str], root: Path) -> dict:
    """One run of scripts/run_pipeline.py under torchrun; its numbers from its metrics files."""
    work = Path(s.out) / name
    shutil.rmtree(work, ignore_errors=True)
    port = {"nccl": 29811, "gloo2": 29812}.get(name, 29813)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}",
           str(REPO / "scripts" / "run_pipeline.py"), "--config", _config(s),
           *_data_overrides(s, root), *_run_overrides(s, work), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if not s.cuda else "4")}
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=s.timeout_s, cwd=REPO)
    out = {"ranks": ranks, "overrides": extra, "ok": proc.returncode == 0, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        out["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        return out
    out.update(gpu.summary() if s.cuda else {})
    m = work / "metrics"
    summary = json.loads((m / "summary.json").read_text())
    out["seconds"] = summary["seconds"]
    out["numbers"] = summary["numbers"]
    phases = {}
    for f in sorted(m.glob("train_*_*.json")):
        d = json.loads(f.read_text())
        phases[f.stem] = {"images_per_s": d.get("images_per_s_this_run"), "data_wait_share": d.get("data_wait_fraction")}
    out["training_phases"] = phases
    for stage in ("make_cam", "make_pseudo"):
        if (m / f"{stage}.json").is_file():
            out[f"{stage}_images_per_s_rank0"] = json.loads((m / f"{stage}.json").read_text()).get("images_per_s")
    return out


def crf_rates(s: Settings, root: Path, cams: Path) -> dict:
    """make_pseudo's CRF on the run's CAMs (images/s): pydensecrf at several worker counts and,
    on CUDA, the torch CRF on the GPU (the rate docs/performance.md's node estimate needs)."""
    from wsss.config import load_config
    from wsss.parallel import node_cores
    from wsss.pseudo.make import make_pseudo_masks

    over = _data_overrides(s, root) + _run_overrides(s, Path(s.out) / "crf")
    cfg = load_config(_config(s), over + ["pseudo.crf_params.backend=pydensecrf"])
    cores = node_cores()
    out = {"cores": cores}
    for w in s.crf_workers:
        if w > cores:
            out[f"workers_{w}"] = f"skipped: {cores} usable cores"
            continue
        dst = Path(s.out) / "crf" / f"w{w}"
        shutil.rmtree(dst, ignore_errors=True)
        r = make_pseudo_masks(cfg, split="train_aug", cam_dir=cams, out_dir=dst, workers=w, progress=False)
        out[f"workers_{w}"] = round(r["images_per_s"], 2)
    if s.cuda:
        gcfg = load_config(_config(s), over + ["pseudo.crf_params.backend=torch", "runtime.device=cuda"])
        dst = Path(s.out) / "crf" / "torch_cuda"
        shutil.rmtree(dst, ignore_errors=True)
        r = make_pseudo_masks(gcfg, split="train_aug", cam_dir=cams, out_dir=dst, workers=1, progress=False)
        out["torch_on_the_gpu"] = round(r["images_per_s"], 2)
    return out


def autotune_cost(s: Settings) -> dict:
    """Seconds of the first and later training steps of the CAM network at crop 512, with
    cudnn's autotuner and without it."""
    import torch

    from wsss.models.backbones import ResNetBackbone
    from wsss.models.cam_net import CAMNet

    out = {}
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        torch.manual_seed(0)
        net = CAMNet(ResNetBackbone("resnet50", output_stride=16, weights="none"), 20).cuda().train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        x = torch.randn(8, 3, 512, 512, device="cuda")
        y = (torch.rand(8, 20, device="cuda") < 0.1).float()
        times = []
        for _ in range(6):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = torch.nn.functional.multilabel_soft_margin_loss(net(x)["logits"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out["autotune" if bench else "plain"] = {"first_step_s": round(times[0], 3), "later_step_s": round(min(times[2:]), 4)}
    out["autotune_extra_first_step_s"] = round(out["autotune"]["first_step_s"] - out["plain"]["first_step_s"], 3)
    torch.backends.cudnn.benchmark = False
    return out


def environment() -> dict:
    import torch

    from wsss.parallel import node_cores

    env = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "usable_cores": node_cores(),
           "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        env.update({"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                    "cuda": torch.version.cuda, "bf16_supported": torch.cuda.is_bf16_supported()})
        try:
            v = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as e:  # reported, not fatal: the NCCL run says the rest
            env["nccl"] = f"unknown ({type(e).__name__})"
    try:
        st = os.statvfs("/dev/shm")
        env["dev_shm_gb"] = round(st.f_bavail * st.f_frsize / 2**30, 2)
    except OSError:
        env["dev_shm_gb"] = None
    return env


def run_check(s: Settings) -> dict:
    """Everything in the module's docstring; returns the JSON it writes."""
    from wsss.data.synthetic import ensure_data
    from wsss.config import load_config

    t0 = time.perf_counter()
    out_dir = Path(s.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "data" / "VOC2012"
    res: dict = {"settings": asdict(s), "environment": environment(), "runs": {}, "skipped": []}
    ensure_data(load_config(_config(s), _data_overrides(s, root) + _run_overrides(s, out_dir / "data_cfg")))
    if s.cuda:
        res["runs"]["nccl_1_rank_bf16_channels_last"] = run_pipeline(
            s, "nccl", 1, ["runtime.device=cuda", "runtime.amp=bf16", "runtime.channels_last=true"], root)
        res["runs"]["gloo_2_ranks_fp16_compile"] = run_pipeline(
            s, "gloo2", 2, ["runtime.device=cuda", "runtime.dist_backend=gloo", "runtime.amp=fp16", "runtime.compile=true",
                            "train.batch_size=4", "seg.batch_size=4"], root)
        cams = out_dir / "nccl" / "cams"
    else:
        res["skipped"] += ["NCCL (no CUDA)", "bf16 / fp16 autocast on CUDA", "channels_last on CUDA", "torch.compile",
                           "the GPU's idle share", "cudnn autotuning"]
        res["runs"]["gloo_2_ranks_cpu"] = run_pipeline(s, "gloo2", 2, [], root)
        cams = out_dir / "gloo2" / "cams"
    if cams.is_dir():
        res["crf_images_per_s"] = crf_rates(s, root, cams)
    if s.cuda:
        try:
            res["cudnn_autotune"] = autotune_cost(s)
        except Exception as e:  # a measurement, not the check: say what failed
            res["cudnn_autotune"] = {"error": f"{type(e).__name__}: {e}"}
    res["ok"] = all(r.get("ok") for r in res["runs"].values())
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def markdown(res: dict) -> str:
    from wsss.reports import md_table, pct

    env = res["environment"]
    lines = [f"# check_gpu: {'ok' if res['ok'] else 'FAILED'} ({res['wall_s']:.0f} s)\n",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "\n"]
    rows = []
    for name, r in res["runs"].items():
        if not r.get("ok"):
            rows.append([name, "**failed**: " + r.get("error", "?"), "", "", ""])
            continue
        phases = r.get("training_phases", {})
        ips = ", ".join(f"{k.split('_', 2)[-1]} {v['images_per_s']:.1f}" for k, v in phases.items() if v.get("images_per_s"))
        wait = max((v["data_wait_share"] or 0 for v in phases.values()), default=0)
        rows.append([name, ips, f"{r.get('make_cam_images_per_s_rank0') or 0:.2f} / {r.get('make_pseudo_images_per_s_rank0') or 0:.2f}",
                     pct(wait), pct(r.get("gpu_idle_share")) if r.get("gpu_idle_share") is not None else "-"])
    lines.append(md_table(["run", "training images/s per phase", "make_cam / make_pseudo images/s (rank 0)",
                           "most data wait (%)", "GPU idle (%)"], rows))
    if "crf_images_per_s" in res:
        lines.append("CRF (two label CRFs per image): " + ", ".join(f"{k} {v}" for k, v in res["crf_images_per_s"].items()) + "\n")
    if "cudnn_autotune" in res:
        lines.append(f"cudnn autotuning: {json.dumps(res['cudnn_autotune'])}\n")
    if res["skipped"]:
        lines.append("Skipped (no CUDA here): " + ", ".join(res["skipped"]) + "\n")
    return "\n".join(lines)
