"""Our stages side by side with plain loops of the reference procedure (scripts/benchmark_reference.py).

The reference side is :mod:`tools.reference_loops`: IRN's / GSLM's make_cam, train_cam and
make_pseudo written from their definitions, one image at a time, with none of our
batching, caching or data path. Both sides run on the same VOC-sized synthetic images
(``voc_sizes``: long side 500, mostly 500x375), the same ResNet-50 weights and the same
thread count, each stage as a fresh process timed from start to exit (imports, model
load and pool start included), in interleaved pairs whose order alternates. A ratio is
reference time / our time (above 1: we are faster); every pair gives one and the
report shows their median and range.

The same run checks that the work is the same: the CAM files of both sides agree
(largest absolute difference) and the pseudo masks are pixel-identical. It also
measures how our stages grow with the image count (time and peak memory at N and 2N).

This module measures and returns dicts; writing them (JSON, Markdown) is the script's.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tools.reference_code import RESULT_TAG  # one tag for every child's results line

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cam" / "cam_r50_voc12.yaml"
TRAIN_LR = 0.001


@dataclass
class Settings:
    data_root: str = "data/benchmark_voc_sized/VOC2012"
    out: str = "work_dirs/benchmark_reference"
    backbone: str = "resnet50"
    stages: list[str] = field(default_factory=lambda: ["make_cam", "train_cam", "make_pseudo"])
    repeats: int = 3
    cam_images: int = 8
    cam_workers: int = 1  # loader workers, both sides
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    train_images: int = 16
    train_batch: int = 4
    train_crop: int = 512
    train_workers: int = 2
    pseudo_images: int = 32
    pseudo_workers: list[int] = field(default_factory=lambda: [1, 2])
    scaling: bool = True  # our make_cam and make_pseudo at N and 2N images
    profile: bool = False  # also where the time goes: make_cam under torch.profiler, make_pseudo by part
    ours_extra: list[str] = field(default_factory=list)  # config overrides for our side (e.g. runtime.channels_last=true)
    before: bool = False  # make_cam also as our loop was before these changes (see _child_make_cam_before)
    reference_code: str | None = None  # a checkout of the official GSLM code: a third side, "code" (tools.reference_code)
    seed: int = 0


# --------------------------------------------------------------------------
# data, weights, CAM files for make_pseudo
# --------------------------------------------------------------------------
def _ids(s: Settings, n: int, offset: int = 0) -> list[str]:
    from wsss.data.voc import VOCLayout

    ids = VOCLayout(s.data_root).read_split("train_aug")
    if len(ids) < offset + n:
        raise ValueError(f"{s.data_root}: {len(ids)} images, the benchmark needs {offset + n} (remove the folder to regenerate)")
    return ids[offset:offset + n]


def prepare(s: Settings) -> dict:
    """The VOC-sized dataset (generated once), the split files, the shared weights."""
    import torch

    from wsss.data.synthetic import generate_synthetic_voc
    from wsss.data.voc import VOCLayout
    from wsss.fileio import write_id_list

    root = Path(s.data_root)
    k = 2 if s.scaling else 1
    # the profiles run every stage once, whatever --stages says
    counts = {"cam": s.cam_images if "make_cam" in s.stages or s.scaling or s.profile else 0,
              "cam_2x": k * s.cam_images if s.scaling else 0,
              "train": s.train_images if "train_cam" in s.stages or s.profile else 0,
              "pseudo": s.pseudo_images if "make_pseudo" in s.stages or s.scaling or s.profile else 0,
              "pseudo_2x": 2 * s.pseudo_images if s.scaling else 0}
    need = max(counts.values())
    if not (root / "cls_labels.json").is_file():
        n = max(need, 64)  # the default settings' largest need: one dataset serves every run
        print(f"generating {n} VOC-sized synthetic images in {root} ...", flush=True)
        generate_synthetic_voc(root, seed=s.seed, num_train=n, num_aug=0, num_val=4, num_test=1, num_classes=20,
                               voc_sizes=True)
    layout = VOCLayout(root)
    splits = {name: _ids(s, n) if n else [] for name, n in counts.items()}
    for name, ids in splits.items():
        if ids:
            write_id_list(layout.split_file(f"bench_{name}"), ids)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"weights_{s.backbone}.pth"
    if not weights.is_file():
        from wsss.cam.training import build_cam_model

        torch.manual_seed(s.seed)
        model = build_cam_model(_config(s, out / "tmp", []), pretrained=False)
        torch.save(model.state_dict(), weights)
    prep = {"weights": str(weights), "splits": {k: len(v) for k, v in splits.items()}}
    if s.reference_code:
        prep["code"] = _prepare_code(s, out, layout, splits, str(weights))
    return prep


def _prepare_code(s: Settings, out: Path, layout, splits: dict[str, list[str]], weights: str) -> dict:
    """The official code's inputs (tools.reference_code.prepare) and the weights our
    train_cam starts from (torch.manual_seed(seed), then build_cam_model), which the code gets
    as its ImageNet weights."""
    import torch

    from tools import reference_code
    from wsss.cam.training import build_cam_model

    code = str(reference_code.check_checkout(s.reference_code))
    init = out / f"init_{s.backbone}_seed{s.seed}.pth"
    if not init.is_file():
        torch.manual_seed(s.seed)
        torch.save(build_cam_model(_config(s, out / "tmp", []), pretrained=False).state_dict(), init)
    ids = layout.read_split("train_aug")
    inputs = reference_code.prepare(out / "reference_code", s.data_root, {k: v for k, v in splits.items() if v}, weights,
                                    _multi_hot(s, ids))
    git = subprocess.run(["git", "-C", code, "rev-parse", "HEAD"], capture_output=True, text=True)
    return {"code": code, "commit": git.stdout.strip() if git.returncode == 0 else None, "inputs": inputs,
            "init_weights": str(init)}


def _config(s: Settings, work: Path, extra: list[str]):
    from wsss.config import load_config

    o = [f"data.root={s.data_root}", f"work_dir={work}", f"model.backbone={s.backbone}", "model.weights=none",
         "runtime.progress=false", "runtime.tensorboard=false", f"seed={s.seed}"]
    return load_config(CONFIG, o + list(extra))


def _multi_hot(s: Settings, ids: list[str]) -> dict[str, np.ndarray]:
    from wsss.data.labels import ImageLabels

    labels = ImageLabels.load(Path(s.data_root) / "cls_labels.json", 20)
    return {i: labels.multi_hot(i) for i in ids}


def pseudo_cams(s: Settings, split: str) -> tuple[str, str]:
    """CAM files for make_pseudo, in both formats, made once: ResNet-18 at scale 1 (the
    CRF's cost does not depend on the network that made the maps). The reference's copy
    holds the same arrays in the reference loop's own file (one npz of arrays per image)."""
    import torch

    from wsss.cam.make import make_cams
    from wsss.cam.training import build_cam_model
    from wsss.data.cam_files import cam_path, load_cam
    from wsss.data.voc import VOCLayout

    base = Path(s.out) / "pseudo_cams"
    ours, ref = base / split / "ours", base / split / "ref"
    ids = VOCLayout(s.data_root).read_split(f"bench_{split}")
    if ref.is_dir() and len(list(ref.glob("*.npz"))) == len(ids):
        return str(ours), str(ref)
    cfg = _config(s, base, ["model.backbone=resnet18", "cam.scales=[1.0]", "cam.workers=0", f"cam.out_dir={ours}",
                             "cam.redo=true"])
    torch.manual_seed(s.seed)
    make_cams(cfg, build_cam_model(cfg, pretrained=False).eval(), torch.device("cpu"), split=f"bench_{split}",
              out_dir=ours, redo=True, progress=False)
    ref.mkdir(parents=True, exist_ok=True)
    for i in ids:
        d = load_cam(cam_path(ours, i))
        np.savez(ref / f"{i}.npz", keys=d["keys"], high_res=d["high_res"])
    return str(ours), str(ref)


# --------------------------------------------------------------------------
# one stage, one side, in a process of its own
# --------------------------------------------------------------------------
def run_child(kind: str, spec: dict, log_dir: Path) -> dict:
    """Run ``kind`` in a fresh Python process; wall time from start to exit, its CPU times and
    peak RSS (the process and the workers it reaped), and what it reported."""
    log_dir.mkdir(parents=True, exist_ok=True)
    spec_file = log_dir / f"{kind}.json"
    spec_file.write_text(json.dumps(spec))
    log = log_dir / f"{kind}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # the official code's steps run in tools.reference_code (its shims, its spawned workers' main module)
    cmd = ["tools.reference_code", kind[len("code_"):]] if kind.startswith("code_") else ["tools.benchmark_reference", kind]
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", *cmd, str(spec_file)], cwd=REPO,
                             stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if p.returncode != 0:
        raise RuntimeError(f"benchmark step {kind} failed (exit {p.returncode}); its log {log}:\n{text[-3000:]}")
    reported = {}
    for line in text.splitlines():
        if line.startswith(RESULT_TAG):
            reported = json.loads(line[len(RESULT_TAG):])
    return {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024.0,
            "reported": reported}


def _child_make_cam(spec: dict, ours: bool) -> dict:
    import torch

    s = Settings(**spec["settings"])
    ids = _ids(s, spec["images"])
    out = Path(spec["out_dir"])
    shutil.rmtree(out, ignore_errors=True)
    cfg = _config(s, Path(spec["work"]), [f"cam.scales={json.dumps(s.scales)}", f"cam.workers={s.cam_workers}",
                                          f"cam.checkpoint={spec['weights']}", f"cam.out_dir={out}", "cam.save_strided=true",
                                          "cam.redo=true"] + (s.ours_extra if ours else []))
    if ours:
        from wsss.cam.make import make_cams
        from wsss.cam.training import load_cam_model

        model = load_cam_model(cfg, cfg.cam.checkpoint, torch.device("cpu"))
        if cfg.runtime.channels_last:  # as the make_cam stage does
            model.to(memory_format=torch.channels_last)
        r = make_cams(cfg, model, torch.device("cpu"), split=spec["split"], out_dir=out, redo=True, progress=False)
        return {"threads": torch.get_num_threads(), "steady_images_per_s": r.get("steady_images_per_s")}
    from tools.reference_loops import make_cam
    from wsss.cam.training import build_cam_model

    model = build_cam_model(cfg, pretrained=False)
    model.load_state_dict(torch.load(spec["weights"], map_location="cpu", weights_only=True))
    make_cam(model, s.data_root, ids, _multi_hot(s, ids), out, scales=s.scales, workers=s.cam_workers)
    return {"threads": torch.get_num_threads()}


def _child_train_cam(spec: dict, ours: bool) -> dict:
    import torch

    s = Settings(**spec["settings"])
    ids = _ids(s, s.train_images)
    work = Path(spec["work"])
    shutil.rmtree(work, ignore_errors=True)
    # lr: from random weights the recipe's 0.1 diverges within a few steps (timing is the same)
    extra = ["train.epochs=1", f"train.batch_size={s.train_batch}", f"train.workers={s.train_workers}", f"train.lr={TRAIN_LR}",
             f"train.aug.crop_size={s.train_crop}", "data.train_split=bench_train", "train.vis_interval=0",
             "train.ckpt_interval=0"]
    cfg = _config(s, work, extra + (s.ours_extra if ours else []))
    torch.manual_seed(s.seed)
    if ours:
        from wsss.cam.training import train_cam
        from wsss.engine.trainer import setup_runtime

        train_cam(cfg, setup_runtime(cfg), resume=False)
        return {"threads": torch.get_num_threads()}
    from tools.reference_loops import train_cam as ref_train
    from wsss.cam.training import build_cam_model

    work.mkdir(parents=True, exist_ok=True)
    model = build_cam_model(cfg, pretrained=False)
    losses = ref_train(model, s.data_root, ids, _multi_hot(s, ids), work / "res50_cam.pth", batch_size=s.train_batch,
                       epochs=1, lr=TRAIN_LR, workers=s.train_workers, crop_size=s.train_crop)
    return {"threads": torch.get_num_threads(), "steps": len(losses)}


def _child_make_pseudo(spec: dict, ours: bool) -> dict:
    s = Settings(**spec["settings"])
    out = Path(spec["out_dir"])
    shutil.rmtree(out, ignore_errors=True)
    ids = _ids(s, spec["images"])
    if ours:
        from wsss.pseudo.make import make_pseudo_masks

        cfg = _config(s, Path(spec["work"]), [f"pseudo.workers={spec['workers']}"])
        r = make_pseudo_masks(cfg, cam_dir=spec["cam_dir"], out_dir=out, redo=True, ids=ids, progress=False)
        return {"images_per_s": r["images_per_s"]}
    from tools.reference_loops import make_pseudo

    make_pseudo(s.data_root, ids, spec["cam_dir"], out, workers=spec["workers"])
    return {}


def _child_make_cam_before(spec: dict) -> dict:
    """Our make_cam as it was before the heap, kept-class and CPU-batching changes, for the
    record of what they bought: glibc's default heap (large blocks mmap'd and unmapped on
    every free), equal-sized images batched (cam.images_per_batch) and every class
    upsampled at full size. The CAM values are the same."""
    import wsss.cam.make as make
    import wsss.parallel as parallel

    full = make.multiscale_cam

    def all_classes(model, inputs, out_size, flip=True, strided_stride=0, autocast=None, keys=None):
        high, strided = full(model, inputs, out_size, flip, strided_stride, autocast)
        return ([high[n, k] for n, k in enumerate(keys)],
                [strided[n, k] for n, k in enumerate(keys)] if strided is not None else None)

    parallel._glibc = lambda: None
    make.BATCH_ON_CPU = True
    make.multiscale_cam = all_classes
    return _child_make_cam(spec, True)


def _child_profile(spec: dict, ours: bool, run) -> dict:
    """One side's stage (``run``: make_cam or train_cam) under torch.profiler: the self CPU
    time of each op in this process (the loader workers' decoding and resizing are not in
    it; convolutions forward and backward are) and the wall time of the whole call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run(spec, ours)
        wall = time.perf_counter() - t0
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    conv = sum(v for k, v in ops.items() if "convolution" in k)
    top = dict(sorted(ops.items(), key=lambda kv: -kv[1])[:8])
    return {"wall_s": wall, "op_s": sum(ops.values()), "convolution_s": conv, "top_ops_s": top}


CHILDREN = {
    "ref_profile_make_cam": lambda spec: _child_profile(spec, False, _child_make_cam),
    "ours_profile_make_cam": lambda spec: _child_profile(spec, True, _child_make_cam),
    "ref_profile_train_cam": lambda spec: _child_profile(spec, False, _child_train_cam),
    "ours_profile_train_cam": lambda spec: _child_profile(spec, True, _child_train_cam),
    "before_make_cam": _child_make_cam_before,
    "ref_make_cam": lambda spec: _child_make_cam(spec, False), "ours_make_cam": lambda spec: _child_make_cam(spec, True),
    "ref_train_cam": lambda spec: _child_train_cam(spec, False), "ours_train_cam": lambda spec: _child_train_cam(spec, True),
    "ref_make_pseudo": lambda spec: _child_make_pseudo(spec, False),
    "ours_make_pseudo": lambda spec: _child_make_pseudo(spec, True),
}


def child_main(argv: list[str]) -> None:
    kind, spec_file = argv
    result = CHILDREN[kind](json.loads(Path(spec_file).read_text()))
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------
def compare_cams(ours_dir: str | Path, ref_dir: str | Path, code: bool = False) -> dict:
    """Largest |ours - reference| of the high-res and strided maps over every file; keys equal.
    ``code``: the official code's files (a pickled dict per image, written by the benchmark's
    own run of it) instead of the loop's."""
    from tools.reference_loops import load_cam_npy
    from wsss.data.cam_files import load_cam

    def load_code(f: Path) -> dict:
        d = np.load(f, allow_pickle=True).item()
        return {k: np.asarray(v) for k, v in d.items()}

    worst = {"high_res": 0.0, "strided": 0.0}
    files = sorted(Path(ref_dir).glob("*.npy" if code else "*.npz"))
    for f in files:
        ref = load_code(f) if code else load_cam_npy(f)
        ours = load_cam(Path(ours_dir) / f"{f.stem}.npz")
        if not np.array_equal(ours["keys"], ref["keys"]):
            raise AssertionError(f"{f.stem}: keys {ours['keys']} vs reference {ref['keys']}")
        for k, r in (("high_res", ref["high_res"]), ("strided", np.asarray(ref["cam"]))):
            if k in ours and r.size:
                worst[k] = max(worst[k], float(np.abs(ours[k] - r).max()))
    return {"files": len(files), "max_abs_diff_high_res": worst["high_res"], "max_abs_diff_strided": worst["strided"]}


def compare_masks(ours_dir: str | Path, ref_dir: str | Path) -> dict:
    from wsss.fileio import read_mask

    files = sorted(Path(ref_dir).glob("*.png"))
    differing = [f.stem for f in files if not np.array_equal(read_mask(f), read_mask(Path(ours_dir) / f.name))]
    return {"files": len(files), "identical": len(files) - len(differing), "differing_ids": differing}


# --------------------------------------------------------------------------
# interleaved pairs
# --------------------------------------------------------------------------
def _summary(pairs: list[dict], base: str = "ref", over: str = "ours") -> dict:
    """Ratios of ``base`` (the reference loop, the official code, or our code before these
    changes) over ``over`` (ours; the code, for the loop's calibration), per pair."""
    ratios = [p[base]["wall_s"] / p[over]["wall_s"] for p in pairs]

    def med(side: str, key: str) -> float:
        return statistics.median(p[side][key] for p in pairs)

    # CPU time (user + system, the process and its workers): less moved by other load than wall time
    cpu = [(p[base]["user_s"] + p[base]["sys_s"]) / (p[over]["user_s"] + p[over]["sys_s"]) for p in pairs]
    out = {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios), "ratios": ratios,
           "cpu_ratio": statistics.median(cpu), "cpu_ratio_min": min(cpu), "cpu_ratio_max": max(cpu)}
    for side in (base, over):
        for key in ("wall_s", "user_s", "sys_s"):
            out[f"{side}_{key}"] = med(side, key)
        out[f"{side}_peak_rss_mib"] = max(p[side]["peak_rss_mib"] for p in pairs)
    return out


def _pairs(s: Settings, stage: str, specs: dict[str, dict], tag: str) -> dict:
    """Every side of ``specs`` ("ref", "ours", optionally "before" and "code") once per repeat,
    the order rotating; the summary of ref / ours, of before / ours and of code / ours when
    present, and with the code the loop's calibration, ref / code."""
    runs = []
    logs = Path(s.out) / "logs" / tag
    sides = list(specs)
    for r in range(s.repeats):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        if r % 2:
            order = order[::-1]
        run = {side: run_child(f"{side}_{stage}", specs[side], logs / f"r{r}") for side in order}
        runs.append(run)
        print(f"  {tag} {r + 1}/{s.repeats}: " + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in run.items())
              + f" (reference / ours {run['ref']['wall_s'] / run['ours']['wall_s']:.2f}x)", flush=True)
    res = {**_summary(runs), "pairs": runs}
    if "before" in specs:
        res["before_over_ours"] = _summary(runs, "before")
    if "code" in specs:
        res["code_over_ours"] = _summary(runs, "code")
        res["loop_over_code"] = _summary(runs, "ref", "code")
    return res


def bench_make_cam(s: Settings, prep: dict) -> dict:
    out = Path(s.out)
    common = {"settings": asdict(s), "weights": prep["weights"], "images": s.cam_images, "split": "bench_cam"}
    ref = {**common, "out_dir": str(out / "make_cam" / "ref"), "work": str(out / "make_cam")}
    ours = {**common, "out_dir": str(out / "make_cam" / "ours"), "work": str(out / "make_cam")}
    specs = {"ref": ref, "ours": ours}
    if s.before:
        specs["before"] = {**ours, "out_dir": str(out / "make_cam" / "before")}
    if "code" in prep:
        specs["code"] = {**prep["code"], "weights": prep["weights"], "split": "cam", "scales": s.scales, "workers": s.cam_workers,
                         "out_dir": str(out / "make_cam" / "code")}
    res = _pairs(s, "make_cam", specs, "make_cam")
    res["cams"] = compare_cams(ours["out_dir"], ref["out_dir"])
    if "code" in specs:
        res["code_cams"] = compare_cams(ours["out_dir"], specs["code"]["out_dir"], code=True)
    res["ours_steady_s_per_image"] = [1 / p["ours"]["reported"]["steady_images_per_s"] for p in res["pairs"]
                                      if p["ours"]["reported"].get("steady_images_per_s")]
    return res


def bench_train_cam(s: Settings, prep: dict) -> dict:
    out = Path(s.out) / "train_cam"
    common = {"settings": asdict(s)}
    specs = {"ref": {**common, "work": str(out / "ref")}, "ours": {**common, "work": str(out / "ours")}}
    if "code" in prep:
        specs["code"] = {**prep["code"], "split": "train", "batch": s.train_batch, "workers": s.train_workers, "lr": TRAIN_LR,
                         "seed": s.seed, "work": str(out / "code")}
    return _pairs(s, "train_cam", specs, "train_cam")


def bench_make_pseudo(s: Settings, prep: dict) -> dict:
    ours_cams, ref_cams = pseudo_cams(s, "pseudo")
    out = Path(s.out) / "make_pseudo"
    res = {}
    for w in s.pseudo_workers:
        common = {"settings": asdict(s), "images": s.pseudo_images, "workers": w}
        ref = {**common, "cam_dir": ref_cams, "out_dir": str(out / f"ref_w{w}"), "work": str(out)}
        ours = {**common, "cam_dir": ours_cams, "out_dir": str(out / f"ours_w{w}"), "work": str(out)}
        specs = {"ref": ref, "ours": ours}
        if "code" in prep:
            from tools.reference_code import write_code_cams

            code_cams = write_code_cams(_ids(s, s.pseudo_images), ours_cams, Path(s.out) / "pseudo_cams" / "pseudo" / "code")
            specs["code"] = {**prep["code"], "split": "pseudo", "workers": w, "cam_dir": code_cams,
                             "out_dir": str(out / f"code_w{w}")}
        r = _pairs(s, "make_pseudo", specs, f"make_pseudo_w{w}")
        r["masks"] = compare_masks(ours["out_dir"], ref["out_dir"])
        if "code" in specs:
            r["code_masks"] = compare_masks(ours["out_dir"], specs["code"]["out_dir"])
        res[f"workers_{w}"] = r
    return res


def profile_network_stage(s: Settings, prep: dict, stage: str) -> dict:
    """Where make_cam's or train_cam's time goes on each side (one run each, under the
    profiler): both run the same convolutions, so the reference's wall time over our
    convolution time bounds the ratio any loop around the same network can reach."""
    out = Path(s.out) / "profile" / stage
    res = {}
    for side in ("ref", "ours"):
        spec = {"settings": asdict(s), "work": str(out / side)}
        if stage == "make_cam":
            spec.update(weights=prep["weights"], images=s.cam_images, split="bench_cam", out_dir=str(out / side / "cams"))
        r = run_child(f"{side}_profile_{stage}", spec, out / "logs")
        res[side] = r["reported"]
        print(f"  profile {stage} {side}: {r['reported']['wall_s']:.1f} s, convolutions "
              f"{r['reported']['convolution_s']:.1f} s", flush=True)
    res["conv_bound_ratio"] = res["ref"]["wall_s"] / res["ours"]["convolution_s"]
    return res


def profile_make_pseudo(s: Settings, prep: dict) -> dict:
    """Our make_pseudo per image, one process, by part: reading the image and the CAM file,
    thresholding, the CRF's pairwise terms (built once for both maps), the two inferences,
    the PNG write."""
    import tempfile

    from pydensecrf.utils import unary_from_labels

    from wsss.data.cam_files import cam_path, load_cam
    from wsss.data.voc import VOCLayout
    from wsss.fileio import read_image, write_palette_png
    from wsss.pseudo.crf import _dense_crf
    from wsss.pseudo.refine import combine_fg_bg, threshold_labels

    ours_cams, _ = pseudo_cams(s, "pseudo")
    cfg = _config(s, Path(s.out) / "profile", [])
    p, crf = cfg.pseudo, cfg.pseudo.crf_params
    parts = dict.fromkeys(["read image + CAM file", "threshold", "pairwise terms (lattices)", "unary + 2 inferences",
                           "argmax + mask", "PNG write"], 0.0)
    ids = _ids(s, s.pseudo_images)
    layout = VOCLayout(s.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        for i in ids:
            t = [time.perf_counter()]
            img = read_image(layout.image(i))
            cam = load_cam(cam_path(ours_cams, i), img.shape[:2])
            t.append(time.perf_counter())
            maps = [threshold_labels(cam["high_res"], th) for th in (p.fg_thres, p.bg_thres)]
            t.append(time.perf_counter())
            n = len(cam["keys"]) + 1
            d = _dense_crf(img, n, crf)
            t.append(time.perf_counter())
            qs = []
            for labels in maps:
                d.setUnaryEnergy(unary_from_labels(labels, n, gt_prob=crf.gt_prob, zero_unsure=False))
                qs.append(np.asarray(d.inference(crf.iters), dtype=np.float32).reshape(n, *img.shape[:2]))
            t.append(time.perf_counter())
            mask = combine_fg_bg(*(np.argmax(q, 0) for q in qs))
            t.append(time.perf_counter())
            write_palette_png(Path(tmp) / f"{i}.png", mask)
            t.append(time.perf_counter())
            for k, name in enumerate(parts):
                parts[name] += t[k + 1] - t[k]
    per_image = {k: v / len(ids) for k, v in parts.items()}
    print("  profile make_pseudo (s per image): " + ", ".join(f"{k} {v:.3f}" for k, v in per_image.items()), flush=True)
    return {"images": len(ids), "s_per_image": per_image}


def bench_scaling(s: Settings, prep: dict) -> dict:
    """make_cam and make_pseudo (the largest pool) of both sides at N and 2N images: time
    should double and peak memory stay. The difference of the two runs is the cost of N more
    images without the start-up, so the ratio of those differences is the steady-state ratio."""
    out = Path(s.out) / "scaling"
    res = {}
    w = max(s.pseudo_workers)
    for stage, n1 in (("make_cam", s.cam_images), ("make_pseudo", s.pseudo_images)):
        rows = {}
        for side in ("ref", "ours"):
            for n in (n1, 2 * n1):
                name = stage.split("_")[1] + ("" if n == n1 else "_2x")
                spec = {"settings": asdict(s), "images": n, "out_dir": str(out / f"{stage}_{side}_{n}"), "work": str(out)}
                if stage == "make_cam":
                    spec.update(weights=prep["weights"], split=f"bench_{name}")
                else:
                    ours_cams, ref_cams = pseudo_cams(s, name)
                    spec.update(workers=w, cam_dir=ours_cams if side == "ours" else ref_cams)
                r = run_child(f"{side}_{stage}", spec, out / "logs" / f"{stage}_{side}_{n}")
                rows[f"{side}_{n}"] = {"images": n, "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"]}
                print(f"  {stage} {side}, {n} images: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        per_image = {side: (rows[f"{side}_{2 * n1}"]["wall_s"] - rows[f"{side}_{n1}"]["wall_s"]) / n1 for side in ("ref", "ours")}
        res[stage] = {"runs": rows, "workers": w if stage == "make_pseudo" else s.cam_workers,
                      "marginal_s_per_image": per_image,
                      "steady_ratio": per_image["ref"] / per_image["ours"] if per_image["ours"] > 0 else float("nan")}
    return res


def run_all(s: Settings, after_stage=None) -> dict:
    """Every stage of ``s``; ``after_stage(results)`` (if given) is called after each, e.g. to save partial results."""
    import platform

    import torch

    prep = prepare(s)
    res = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
           "settings": asdict(s), "prepared": prep}
    for stage, fn in (("make_cam", bench_make_cam), ("train_cam", bench_train_cam), ("make_pseudo", bench_make_pseudo)):
        if stage in s.stages:
            print(f"{stage}: {s.repeats} interleaved pairs", flush=True)
            res[stage] = fn(s, prep)
            if after_stage is not None:
                after_stage(res)
    if s.scaling:
        print("cost vs image count (ours)", flush=True)
        res["scaling"] = bench_scaling(s, prep)
    if s.profile:
        print("profiles", flush=True)
        res["profile"] = {"make_cam": profile_network_stage(s, prep, "make_cam"),
                          "train_cam": profile_network_stage(s, prep, "train_cam"), "make_pseudo": profile_make_pseudo(s, prep)}
    return res


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def markdown(res: dict) -> str:
    from tools.published import render_reference_tables

    return render_reference_tables(res)


if __name__ == "__main__":
    child_main(sys.argv[1:])
