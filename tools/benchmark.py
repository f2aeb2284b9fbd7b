"""Per-stage benchmark on the synthetic mini-VOC (scripts/benchmark.py).

Every figure is a rate or a ratio measured here, never asserted in a test:

* train_cam images/s per method at steady state, and the raw forward+backward
  rate of the same model on batches held in memory: their ratio is the
  training efficiency (how well loading and augmentation hide behind compute);
* make_cam images/s (all scales + flip, files written) against the raw
  forward rate of the same pyramids held in memory: the inference efficiency;
* make_pseudo images/s with 1 and 2 worker processes, and the straightforward
  version that builds two CRFs per image;
* eval_cam: one threshold vs the whole sweep;
* peak resident memory of each stage, for N and 2N images.
"""
from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import torch

from wsss.config import Config, load_config
from wsss.registry import bench_phase
from wsss.reports import md_table

REPO = Path(__file__).resolve().parents[1]
# the synthetic configs of compare_methods (tools.compare.ARMS), under the benchmark's names
METHOD_CONFIGS = {
    "cam_net": "configs/cam/cam_r18_synthetic.yaml",
    "ppl_progressive": "configs/ppl/ppl_progressive_r18_synthetic.yaml",
    "ppl_explicit": "configs/ppl/ppl_explicit_r18_synthetic.yaml",
    "gslm_slm": "configs/gslm/gslm_r18_synthetic.yaml",
}


def bench_config(method: str, args, work: Path, extra: list[str] | None = None) -> Config:
    o = [f"data.root={args.data_root}", f"work_dir={work}", f"model.backbone={args.backbone}",
         f"data.synthetic.image_size={args.image_size}", f"data.synthetic.num_aug={2 * args.images}",
         f"train.batch_size={args.batch}", f"train.workers={args.workers}", f"train.aug.crop_size={args.image_size}",
         f"runtime.device={args.device}", "runtime.progress=false", "runtime.tensorboard=false",
         f"cam.workers={args.workers}", "train.ckpt_interval=0", "train.vis_interval=0"]
    return load_config(REPO / METHOD_CONFIGS[method], o + list(extra or []))


def _training_phase(cfg: Config):
    """The phase a method registered for the benchmark (GSLM: an SLM round), else the model's
    first phase (PPL progressive: stage 1, split after stage 1, the costliest)."""
    from wsss.cam.training import cam_phases

    phase = bench_phase(cfg)
    return phase if phase is not None else cam_phases(cfg)[0]


def bench_train(args, work: Path, method: str, extra: list[str] | None = None) -> dict:
    """Steady-state images/s of the engine and of the bare model on in-memory batches."""
    from wsss.cam.training import build_cam_model
    from wsss.engine.checkpoint import unwrap
    from wsss.engine.optim import build_sgd
    from wsss.engine.trainer import make_context, setup_runtime, train_phase

    cfg = bench_config(method, args, work, extra)
    device = setup_runtime(cfg, autotune=True)
    ctx = make_context(cfg, device, "train_cam", work / "checkpoints")
    times: list[float] = []

    def mark(step: int) -> None:  # the end of each step, measured from outside the loop
        _sync(device)
        times.append(time.perf_counter())

    ctx.step_hooks.append(mark)
    phase = _training_phase(cfg)
    phase.schedule.max_steps = args.warmup + args.steps
    phase.schedule.epochs = 10_000
    phase.schedule.log_interval = 10_000
    phase.schedule.vis_interval = 0
    model = build_cam_model(cfg).to(device)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    train_phase(model, phase, ctx, None, work / "checkpoints" / "last.pth")
    engine_ips = args.steps * cfg.train.batch_size / (times[-1] - times[args.warmup - 1])

    # the same work on batches already in memory: no loading, decoding or augmentation
    dataset = phase.build_dataset(ctx)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False, num_workers=0)
    batches = []
    for i, b in enumerate(loader):
        batches.append({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()})
        if i == 3:
            break
    if cfg.runtime.channels_last:
        for b in batches:
            b["img"] = b["img"].contiguous(memory_format=torch.channels_last)
    bare = unwrap(model)
    bare.train()
    opt = build_sgd(phase.param_groups(bare), 1e-4, 0.9, 1e-4)

    def step(b):
        with ctx.autocast():
            loss = phase.compute_loss(bare, b, ctx)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % len(batches)])
    _sync(device)
    raw_ips = args.steps * cfg.train.batch_size / (time.perf_counter() - t0)
    return {"method": method, "engine_images_per_s": engine_ips, "raw_images_per_s": raw_ips,
            "training_efficiency": engine_ips / raw_ips, "amp": cfg.runtime.amp, "channels_last": cfg.runtime.channels_last}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model_for_inference(cfg: Config, device: torch.device):
    from wsss.cam.training import build_cam_model
    from wsss.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_cam_model(cfg, pretrained=False).eval().to(device)
    save_checkpoint(cfg.cam.checkpoint, {"model": model.state_dict()})
    return model


def bench_make_cam(args, work: Path, n_images: int | None = None) -> dict:
    """make_cam (files written) vs the raw multi-scale forward on pyramids held in memory."""
    from wsss.cam.inference import multiscale_cam, normalize_cams
    from wsss.cam.make import make_cams
    from wsss.data.datasets import InferenceDataset
    from wsss.data.labels import ImageLabels
    from wsss.data.voc import VOCLayout
    from wsss.engine.trainer import setup_runtime
    from wsss.fileio import write_id_list

    cfg = bench_config("cam_net", args, work)
    device = setup_runtime(cfg)
    model = _model_for_inference(cfg, device)
    layout = VOCLayout(cfg.data.root)
    ids = layout.read_split("train_aug")[: n_images or args.images]
    split = f"bench_{len(ids)}"
    write_id_list(layout.split_file(split), ids)
    cfg.cam.split = split
    cfg.cam.redo = True
    summary = make_cams(cfg, model, device, split=split, out_dir=work / f"cams_{len(ids)}", progress=False)
    labels = ImageLabels.load(cfg.data.label_file)
    ds = InferenceDataset(cfg.data.root, ids, labels, cfg.cam.scales, resize_mode=cfg.cam.resize_mode)
    samples = [ds[i] for i in range(min(len(ds), 32))]
    groups = [samples[i:i + cfg.cam.images_per_batch] for i in range(0, len(samples), cfg.cam.images_per_batch)]
    with torch.inference_mode():
        def run(g):
            inputs = [torch.stack([s["inputs"][k] for s in g]).to(device) for k in range(len(cfg.cam.scales))]
            high, _ = multiscale_cam(model, inputs, g[0]["image"].shape[:2], cfg.cam.flip)
            for n, s in enumerate(g):
                normalize_cams(high[n, torch.from_numpy(s["label"].nonzero()[0]).to(device)])

        run(groups[0])
        _sync(device)
        t0 = time.perf_counter()
        for g in groups:
            run(g)
        _sync(device)
        raw_ips = len(samples) / (time.perf_counter() - t0)
    return {"images": len(ids), "make_cam_images_per_s": summary["images_per_s"],
            "make_cam_steady_images_per_s": summary["steady_images_per_s"], "raw_images_per_s": raw_ips,
            "inference_efficiency": summary["steady_images_per_s"] / raw_ips,
            "inference_efficiency_end_to_end": summary["images_per_s"] / raw_ips, "scales": cfg.cam.scales, "flip": cfg.cam.flip,
            "cam_dir": str(work / f"cams_{len(ids)}"), "split": split}


def bench_make_pseudo(args, work: Path, cam_dir: str, split: str, workers: int, shared: bool) -> dict:
    from wsss.pseudo.make import make_pseudo_masks

    cfg = bench_config("cam_net", args, work)
    cfg.pseudo.shared_pairwise = shared
    out = work / f"pseudo_w{workers}_{'shared' if shared else 'two_crf'}_{split}"
    r = make_pseudo_masks(cfg, split=split, cam_dir=cam_dir, out_dir=out, redo=True, workers=workers, progress=False)
    return {"workers": workers, "shared_pairwise": shared, "images_per_s": r["images_per_s"], "images": r["computed"]}


def bench_eval_cam(args, work: Path, cam_dir: str, split: str) -> dict:
    from wsss.cam.evaluate import sweep_split, sweep_thresholds

    cfg = bench_config("cam_net", args, work)
    cfg.data.gt_dir = "SegmentationClassAug"  # GT of every train_aug image
    thresholds = sweep_thresholds(cfg)

    def best_of(ts: list[float], repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sweep_split(cfg, split, cam_dir, ts, workers=0)
            times.append(time.perf_counter() - t0)
        return min(times)

    single = best_of([0.15])
    full = best_of(thresholds)
    return {"thresholds": len(thresholds), "single_threshold_s": single, "sweep_s": full, "sweep_over_single": full / single}


def _child(fn_name: str, args, work: Path, kwargs: dict, queue) -> None:
    import tools.benchmark as b

    result = getattr(b, fn_name)(args, work, **kwargs)
    queue.put((result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def in_child(fn_name: str, args, work: Path, **kwargs) -> tuple[dict, float]:
    """Run a benchmark function in a fresh process; returns (result, peak RSS in MiB)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn_name, args, work, kwargs, q))
    p.start()
    import queue as queue_mod

    while True:
        try:
            result, rss = q.get(timeout=1.0)
            break
        except queue_mod.Empty:
            if not p.is_alive():
                raise RuntimeError(f"benchmark step {fn_name} failed in its process (exit code {p.exitcode})") from None
    p.join()
    return result, rss


def run_benchmark(args) -> dict:
    from wsss.data.synthetic import ensure_data

    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    cfg = bench_config("cam_net", args, work)
    ensure_data(cfg)
    device = "cuda" if (args.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    out: dict = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                             "cpus": mp.cpu_count(), "torch": torch.__version__, "device": device,
                             "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None},
                 "settings": {k: v for k, v in vars(args).items()}}
    out["train"] = []
    variants = [[]]
    if device == "cuda":
        variants = [[], ["runtime.amp=bf16"], ["runtime.channels_last=true"], ["runtime.amp=bf16", "runtime.channels_last=true"]]
    for method in args.methods.split(","):
        for extra in variants:
            r, rss = in_child("bench_train", args, work / f"train_{method}", method=method, extra=extra)
            r["peak_rss_mib"] = rss
            out["train"].append(r)
            print(f"train {method} {' '.join(extra)}: {r['engine_images_per_s']:.1f} img/s, raw {r['raw_images_per_s']:.1f}, "
                  f"efficiency {r['training_efficiency']:.2f}", flush=True)
    mc, rss = in_child("bench_make_cam", args, work)
    mc2, rss2 = in_child("bench_make_cam", args, work, n_images=2 * args.images)
    mc.update({"peak_rss_mib": rss, "peak_rss_mib_2x_images": rss2})
    out["make_cam"] = mc
    print(f"make_cam: {mc['make_cam_steady_images_per_s']:.2f} img/s steady, {mc['make_cam_images_per_s']:.2f} end to end, raw {mc['raw_images_per_s']:.2f}, efficiency "
          f"{mc['inference_efficiency']:.2f}; peak RSS {rss:.0f} MiB ({args.images} images) vs {rss2:.0f} MiB ({2 * args.images})", flush=True)
    pseudo = []
    for workers, shared in ((1, False), (1, True), (2, True)):
        r, rss = in_child("bench_make_pseudo", args, work, cam_dir=mc["cam_dir"], split=mc["split"], workers=workers, shared=shared)
        r["peak_rss_mib"] = rss
        pseudo.append(r)
    r2, rss_2x = in_child("bench_make_pseudo", args, work, cam_dir=mc2["cam_dir"], split=mc2["split"], workers=1, shared=True)
    pseudo[1]["peak_rss_mib_2x_images"] = rss_2x
    base, shared1, shared2 = pseudo
    out["make_pseudo"] = {"runs": pseudo, "shared_over_two_crf": shared1["images_per_s"] / base["images_per_s"],
                          "two_workers_over_one": shared2["images_per_s"] / shared1["images_per_s"]}
    print(f"make_pseudo: two CRFs {base['images_per_s']:.1f} img/s; shared pairwise {shared1['images_per_s']:.1f} "
          f"({out['make_pseudo']['shared_over_two_crf']:.2f}x); 2 workers {shared2['images_per_s']:.1f} "
          f"({out['make_pseudo']['two_workers_over_one']:.2f}x)", flush=True)
    ev, rss = in_child("bench_eval_cam", args, work, cam_dir=mc["cam_dir"], split=mc["split"])
    ev2, rss2 = in_child("bench_eval_cam", args, work, cam_dir=mc2["cam_dir"], split=mc2["split"])
    ev.update({"peak_rss_mib": rss, "peak_rss_mib_2x_images": rss2})
    out["eval_cam"] = ev
    print(f"eval_cam: 1 threshold {ev['single_threshold_s']:.2f} s, {ev['thresholds']} thresholds {ev['sweep_s']:.2f} s "
          f"({ev['sweep_over_single']:.2f}x)", flush=True)
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpus']} CPUs, {m['processor']}, torch {m['torch']}, device {m['device']}"
             + (f" ({m['gpu']})" if m["gpu"] else "") + "\n"]
    rows = [[r["method"] + (" amp" if r["amp"] != "none" else "") + (" cl" if r["channels_last"] else ""),
             f"{r['engine_images_per_s']:.1f}", f"{r['raw_images_per_s']:.1f}", f"{r['training_efficiency']:.2f}",
             f"{r['peak_rss_mib']:.0f}"] for r in res["train"]]
    lines.append(md_table(["train_cam", "engine img/s", "raw fwd+bwd img/s", "efficiency (target >= 0.9)", "peak RSS MiB"], rows))
    mc = res["make_cam"]
    lines.append(md_table(["make_cam", "value"], [
        ["images/s, steady state (files written)", f"{mc['make_cam_steady_images_per_s']:.2f}"],
        ["images/s, end to end (start-up included)", f"{mc['make_cam_images_per_s']:.2f}"],
        ["raw multi-scale forward images/s", f"{mc['raw_images_per_s']:.2f}"],
        ["inference efficiency, steady state (target >= 0.9)", f"{mc['inference_efficiency']:.2f}"],
        ["inference efficiency, end to end", f"{mc['inference_efficiency_end_to_end']:.2f}"],
        [f"peak RSS MiB, {mc['images']} / {2 * mc['images']} images", f"{mc['peak_rss_mib']:.0f} / {mc['peak_rss_mib_2x_images']:.0f}"],
    ]))
    mp_ = res["make_pseudo"]
    b, s1, s2 = mp_["runs"]
    lines.append(md_table(["make_pseudo", "images/s", "ratio"], [
        ["two CRFs per image, 1 worker", f"{b['images_per_s']:.1f}", "1.00"],
        ["shared pairwise terms, 1 worker", f"{s1['images_per_s']:.1f}", f"{mp_['shared_over_two_crf']:.2f} (target >= 1.5)"],
        ["shared pairwise terms, 2 workers", f"{s2['images_per_s']:.1f}", f"{mp_['two_workers_over_one']:.2f} vs 1 worker (target >= 1.8)"],
    ]))
    ev = res["eval_cam"]
    lines.append(md_table(["eval_cam", "seconds"], [
        ["1 threshold", f"{ev['single_threshold_s']:.2f}"],
        [f"sweep of {ev['thresholds']} thresholds", f"{ev['sweep_s']:.2f} ({ev['sweep_over_single']:.2f}x; target <= 2)"],
        ["peak RSS MiB, N / 2N images", f"{ev['peak_rss_mib']:.0f} / {ev['peak_rss_mib_2x_images']:.0f}"],
    ]))
    return "\n".join(lines)

