"""IRN on a CPU: the random walk per image, sparse (ours) against the reference's dense
procedure, and the boundary network's training rate.

    python scripts/benchmark_irn.py [--reference /path/to/GSLM-or-IRN checkout] [--out docs/results/irn_benchmark.json]

Every measurement runs in a fresh process (spawn) so that its peak resident memory is
its own: ``peak_mib`` is the process's peak RSS minus its RSS just before the measured
call (inputs already built).

* walk: a boundary map with walls (random, cubed: mostly open, and two closed lines) and
  k class maps at stride 4 for an image of H x W. ``sparse`` = wsss.irn.walk's stencil
  walk (float64, the default; best of 3 runs); ``dense`` = wsss.irn.walk.dense_random_walk,
  our copy of the reference's procedure (dense N x N transition matrix squared 8 times),
  which tests/test_irn.py and the refharness show to give the reference's numbers. With
  ``--reference`` (a GSLM checkout: its misc/indexing.py runs on a CPU as published; IRN's
  calls .cuda()) the reference's own ``propagate_to_edge`` runs on the same inputs at
  500 x 375, beside our dense copy: the copy's time against the reference's, and all three
  outputs compared.
* train: forward + boundary loss + backward + SGD step of BoundaryNet (ResNet-50, random
  weights: the rate does not depend on them) on batches held in memory, radius 10.

Denormals: the dense powers of T hold float32 denormals, on which x86 CPUs slow down
many times (GPUs do not); the dense runs at 500 x 375 set torch.set_flush_denormal(True)
(as the refharness does; ``--no-flush-denormal`` to keep them), and one dense run at
320 x 240 is made both ways to show the factor.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _inputs(h: int, w: int, k: int, seed: int = 0):
    import torch

    from wsss.irn.model import feature_size

    fh, fw = feature_size((h, w))
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(fh, fw, generator=g) ** 3
    b[:, fw // 3] = 0.98
    b[fh // 2, :] = 0.98
    cams = torch.rand(k, fh, fw, generator=g)
    return cams, b


def _child(kind: str, spec: dict, threads: int, q) -> None:
    import torch

    torch.set_num_threads(threads)
    out: dict = {"kind": kind, **spec}
    if kind == "walk":
        from wsss.irn.walk import dense_random_walk, sparse_random_walk

        torch.set_flush_denormal(bool(spec.get("flush_denormal", False)))
        cams, b = _inputs(spec["h"], spec["w"], spec["k"])
        if spec["impl"] == "reference":
            sys.path.insert(0, spec["reference"])
            from misc import indexing  # the reference's module

            def fn():
                return indexing.propagate_to_edge(cams.clone(), b.clone(), beta=10, exp_times=8, radius=5)[:, 0]
        else:
            walk = sparse_random_walk if spec["impl"] == "sparse" else dense_random_walk

            def fn():
                return walk(cams, b, beta=10, exp_times=8, radius=5)

        base = _rss_mib()
        times = []
        for _ in range(spec.get("repeat", 1)):  # best of n: the machine is shared
            t = time.perf_counter()
            rw = fn()
            times.append(time.perf_counter() - t)
        out["seconds"] = min(times)
        out["all_seconds"] = times
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base
        out["n_pixels_stride4"] = int(b.numel())
        torch.save(rw, spec["save"]) if spec.get("save") else None
    elif kind == "train":
        from wsss.irn.indexing import pair_index
        from wsss.irn.model import BoundaryNet
        from wsss.irn.training import irn_loss

        torch.manual_seed(0)
        net = BoundaryNet("resnet50", "none").train()
        opt = torch.optim.SGD(net.edge_parameters(), lr=0.1, weight_decay=1e-4)
        s, n = spec["crop"], spec["batch"]
        img = torch.randn(n, 3, s, s)
        lab = torch.zeros(n, s // 4, s // 4, dtype=torch.long)
        lab[:, :, s // 8:] = 1
        lab[:, s // 16: s // 8, :] = 255
        pair_index(10)

        def step():
            opt.zero_grad(set_to_none=True)
            terms = irn_loss(net, {"img": img, "label": lab}, radius=10)
            terms["loss"].backward()
            opt.step()

        step()  # warm-up
        base = _rss_mib()
        t = time.perf_counter()
        steps = 0
        while steps < spec["steps"] or time.perf_counter() - t < spec.get("min_seconds", 0):
            step()
            steps += 1
        out["seconds"] = time.perf_counter() - t
        out["steps"] = steps
        out["images_per_s"] = steps * n / out["seconds"]
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base
    q.put(out)


def run(kind: str, spec: dict, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, spec, threads, q))
    p.start()
    res = q.get()
    p.join()
    print(json.dumps(res), flush=True)
    return res


SPARSE_SIZES = [(375, 500), (500, 375), (240, 320), (480, 640), (768, 1024)]


def sparse_again(a) -> int:
    res = json.loads(a.out.read_text())
    fresh = [run("walk", {"impl": "sparse", "h": h, "w": w, "k": a.classes, "repeat": 3}, a.threads) for h, w in SPARSE_SIZES]
    res["walk"] = fresh + [r for r in res["walk"] if r["impl"] != "sparse"]
    sp = fresh[0]
    sm = res["summary"]
    sm.update({"sparse_500x375_s": sp["seconds"], "sparse_500x375_peak_mib": sp["peak_mib"]})
    if "dense_copy_500x375_s" in sm:
        sm["speedup_vs_dense_copy"] = sm["dense_copy_500x375_s"] / sp["seconds"]
    if "reference_500x375_s" in sm:
        sm["speedup_vs_reference"] = sm["reference_500x375_s"] / sp["seconds"]
        sm["memory_ratio_reference_over_sparse"] = sm["reference_500x375_peak_mib"] / max(sp["peak_mib"], 1e-9)
    res["sparse_remeasured"] = datetime.date.today().isoformat()
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(sm, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "irn_benchmark.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=2, help="class maps per image (VOC: 1.5 on average)")
    ap.add_argument("--reference", default="", help="a checkout of GSLM or IRN (its misc/indexing.py)")
    ap.add_argument("--no-flush-denormal", dest="flush", action="store_false")
    ap.add_argument("--skip-dense-voc", action="store_true", help="skip the minutes-long dense walk at 500 x 375")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--sparse-only", action="store_true",
                    help="measure the sparse walk again and replace its entries in an existing --out file")
    a = ap.parse_args()
    if a.sparse_only:
        return sparse_again(a)
    k, th = a.classes, a.threads
    res: dict = {"walk": [], "train": []}
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "irn_walk_benchmark"
    tmp.mkdir(parents=True, exist_ok=True)

    # sparse: VOC sizes and beyond (memory flat per pixel)
    for h, w in SPARSE_SIZES:
        spec = {"impl": "sparse", "h": h, "w": w, "k": k, "repeat": 3}
        if (h, w) == (375, 500):
            spec["save"] = str(tmp / "sparse_voc.pt")
        res["walk"].append(run("walk", spec, th))
    import torch

    # the reference's own code at one VOC size, beside our dense copy on the same inputs
    voc = {"h": 375, "w": 500, "k": k, "flush_denormal": a.flush}
    if not a.skip_dense_voc:
        res["walk"].append(run("walk", {"impl": "dense", **voc, "save": str(tmp / "dense_voc.pt")}, th))
        if a.reference:
            res["walk"].append(run("walk", {"impl": "reference", "reference": a.reference, **voc,
                                            "save": str(tmp / "ref_voc.pt")}, th))
            d = torch.load(tmp / "dense_voc.pt", weights_only=True)
            r = torch.load(tmp / "ref_voc.pt", weights_only=True)
            sp = torch.load(tmp / "sparse_voc.pt", weights_only=True) if (tmp / "sparse_voc.pt").is_file() else None
            res["equality_500x375"] = {"dense_copy_vs_reference_max_abs": float((d - r).abs().max()),
                                       "reference_max": float(r.abs().max())}
            if sp is not None:
                res["equality_500x375"]["sparse_vs_reference_max_abs"] = float((sp - r).abs().max())
        res["walk"].append(run("walk", {"impl": "dense", **voc, "h": 500, "w": 375}, th))
    # the denormal factor, on a smaller map
    small = {"h": 240, "w": 320, "k": k}
    res["walk"].append(run("walk", {"impl": "dense", **small, "flush_denormal": True}, th))
    res["walk"].append(run("walk", {"impl": "dense", **small, "flush_denormal": False}, th))
    if not a.skip_train:
        for crop, batch in [(256, 4), (512, 2)]:
            res["train"].append(run("train", {"crop": crop, "batch": batch, "steps": 3, "min_seconds": 20}, th))

    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    res["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "threads": th, "torch": torch.__version__,
                      "python": platform.python_version(), "flush_denormal_dense": a.flush}
    res["commit"] = commit
    res["date"] = datetime.date.today().isoformat()
    res["classes_per_image"] = k

    def pick(impl, h, w, flush=None):
        for r in res["walk"]:
            if r["impl"] == impl and r["h"] == h and r["w"] == w and (flush is None or r.get("flush_denormal") == flush):
                return r
        return None

    sp, dn, rf = pick("sparse", 375, 500), pick("dense", 375, 500), pick("reference", 375, 500)
    summary = {"sparse_500x375_s": sp["seconds"], "sparse_500x375_peak_mib": sp["peak_mib"]}
    if dn:
        summary.update({"dense_copy_500x375_s": dn["seconds"], "dense_copy_500x375_peak_mib": dn["peak_mib"],
                        "speedup_vs_dense_copy": dn["seconds"] / sp["seconds"]})
    if rf:
        summary.update({"reference_500x375_s": rf["seconds"], "reference_500x375_peak_mib": rf["peak_mib"],
                        "speedup_vs_reference": rf["seconds"] / sp["seconds"],
                        "memory_ratio_reference_over_sparse": rf["peak_mib"] / max(sp["peak_mib"], 1e-9),
                        "dense_copy_time_over_reference": dn["seconds"] / rf["seconds"]})
    fl, nf = pick("dense", 240, 320, True), pick("dense", 240, 320, False)
    summary["denormal_slowdown_320x240"] = nf["seconds"] / fl["seconds"]
    if res["train"]:
        summary["train_images_per_s"] = {f"crop{r['crop']}_batch{r['batch']}": r["images_per_s"] for r in res["train"]}
    res["summary"] = summary
    from tools.published import publish

    publish(a.out, "irn_benchmark", res)  # with the command, the machine and the commit
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
