"""Throughput of the label CRF on VOC-sized images: pydensecrf against wsss.pseudo.crf_torch.

    python -m tools.crf_throughput [--images 8] [--repeats 3] [--out results.json]
    python scripts/crf_throughput.py --out docs/results/crf_throughput.json   # what docs/crf_torch.md quotes

The work is make_pseudo's: per image, the label CRF (``CRFConfig()``, 10 iterations) on two
label maps (the fg and the bg threshold of CAM-like maps; tools/crf_agreement.py makes the
images and maps, 375x500 and 500x375 alternately). Each configuration refines the same images:

* ``pydensecrf, P proc``: ``wsss.pseudo.crf.crf_labels`` (one lattice per image, shared by the
  two maps), in this process (P = 1) or in a pool of P worker processes, one image per task;
* ``torch, T thr, batch B``: ``crf_labels_batch`` in this process with torch.set_num_threads(T),
  B images per call (their lattices and mean field in one set of tensor operations);
* ``torch, P proc, batch B``: the same in a pool of P processes with one thread each.

Pools are started (spawn) and warmed up before their clock starts. The configurations run
interleaved, ``--repeats`` times; each is reported as images/s (median and range over the
repeats) and as its ratio to ``pydensecrf, 1 proc`` of the same repeat (median and range):
compare speeds as those ratios, which share the machine's state. The machine's load average
before and after is recorded: on a shared CPU absolute rates move with the other users.

OpenMP's default waiting (threads spin for a while at each barrier) collapses when the cores
are shared: measured here with other jobs running, torch with 2 threads took 3-6x longer than
with 1. The tool therefore sets OMP_WAIT_POLICY=PASSIVE before torch starts (``--omp-wait
active`` keeps the default spinning); the results record which.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

_SAMPLES: list | None = None  # a pool worker's copy of the images and label maps


def _label_work(samples: list[dict]) -> list[dict]:
    """image, the fg and bg label maps (make_pseudo's thresholds) and n_labels per sample."""
    from tools.crf_agreement import BG_THRES, FG_THRES
    from wsss.pseudo.refine import threshold_labels

    return [{"image": s["image"], "maps": [threshold_labels(s["cams"], t) for t in (FG_THRES, BG_THRES)],
             "n": int(len(s["keys"]) + 1)} for s in samples if len(s["keys"])]


def _init(samples: list[dict]) -> None:
    global _SAMPLES
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    _SAMPLES = samples


def _pyd_one(i: int) -> int:
    from wsss.config import CRFConfig
    from wsss.pseudo.crf import crf_labels

    s = _SAMPLES[i]
    crf_labels(s["image"], s["maps"], s["n"], CRFConfig())
    return i


def _torch_batch(idx: list[int]) -> int:
    from wsss.config import CRFConfig
    from wsss.pseudo.crf_torch import crf_labels_batch

    ss = [_SAMPLES[i] for i in idx]
    crf_labels_batch([s["image"] for s in ss], [s["maps"] for s in ss], [s["n"] for s in ss], CRFConfig())
    return len(idx)


def _batches(n: int, b: int) -> list[list[int]]:
    return [list(range(i, min(n, i + b))) for i in range(0, n, b)]


class Config:
    def __init__(self, name: str, backend: str, procs: int = 1, threads: int = 1, batch: int = 1):
        self.name, self.backend, self.procs, self.threads, self.batch = name, backend, procs, threads, batch
        self.pool = None

    def start(self, samples: list[dict]) -> None:
        if self.procs > 1:
            import multiprocessing as mp

            self.pool = mp.get_context("spawn").Pool(self.procs, initializer=_init, initargs=(samples,))
            self.pool.map(_pyd_one if self.backend == "pydensecrf" else _torch_batch,
                          list(range(self.procs)) if self.backend == "pydensecrf" else [[i] for i in range(self.procs)],
                          chunksize=1)  # warm up every worker

    def run(self, n: int) -> float:
        import torch

        t0 = time.perf_counter()
        if self.backend == "pydensecrf":
            if self.pool is None:
                for i in range(n):
                    _pyd_one(i)
            else:
                list(self.pool.imap_unordered(_pyd_one, range(n), chunksize=1))
        else:
            if self.pool is None:
                torch.set_num_threads(self.threads)
                for b in _batches(n, self.batch):
                    _torch_batch(b)
            else:
                list(self.pool.imap_unordered(_torch_batch, _batches(n, self.batch), chunksize=1))
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="images per configuration and repeat (default 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-sizes", default="1,2,4", help="torch batch sizes (default 1,2,4)")
    ap.add_argument("--omp-wait", choices=["passive", "active"], default="passive",
                    help="OMP_WAIT_POLICY for torch's threads (default passive; active: OpenMP's spinning default)")
    ap.add_argument("--out", help="write the results here as JSON (docs/results/: through scripts/crf_throughput.py)")
    a = ap.parse_args(argv)
    from tools.crf_agreement import check_out

    check_out(a.out, "crf_throughput.py")
    if a.omp_wait == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch (and its OpenMP runtime) starts
    import torch

    global _SAMPLES
    from tools.crf_agreement import make_samples, publish_to, pydensecrf_version, stats

    load0 = os.getloadavg()
    work = _label_work(make_samples(a.images, a.seed))
    _SAMPLES = work
    n = len(work)
    bs = [int(b) for b in a.batch_sizes.split(",")]
    configs = [Config("pydensecrf, 1 proc", "pydensecrf"), Config("pydensecrf, 2 proc", "pydensecrf", procs=2)]
    configs += [Config(f"torch, {t} thr, batch {b}", "torch", threads=t, batch=b) for t in (1, 2) for b in bs]
    configs += [Config(f"torch, 2 proc, batch {b}", "torch", procs=2, batch=b) for b in (1, max(bs))]
    for c in configs:
        c.start(work)
    _torch_batch([0])  # warm up this process's torch
    rates: dict[str, list[float]] = {c.name: [] for c in configs}
    ratios: dict[str, list[float]] = {c.name: [] for c in configs}
    try:
        for rep in range(a.repeats):
            order = configs if rep % 2 == 0 else configs[::-1]  # interleaved, alternating direction
            secs = {}
            for c in order:
                secs[c.name] = c.run(n)
                print(f"repeat {rep + 1}/{a.repeats}  {c.name:28s} {n / secs[c.name]:6.3f} img/s", flush=True)
            for c in configs:
                rates[c.name].append(n / secs[c.name])
                ratios[c.name].append(secs[configs[0].name] / secs[c.name])
    finally:
        for c in configs:
            c.close()
    torch.set_num_threads(1)
    data = {
        "settings": {"images": n, "repeats": a.repeats, "seed": a.seed, "sizes": "375x500 and 500x375 alternately",
                     "work": "label CRF, CRFConfig() (10 iterations), 2 label maps per image (fg/bg thresholds 0.30/0.05)",
                     "labels_per_image": [s["n"] for s in work], "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                     "pydensecrf2": pydensecrf_version(),
                     "load_average_before": [round(x, 2) for x in load0],
                     "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "images_per_s": {k: {kk: round(vv, 4) for kk, vv in stats(v).items() if kk != "mean"} for k, v in rates.items()},
        "ratio_to_pydensecrf_1_proc": {k: {kk: round(vv, 3) for kk, vv in stats(v).items() if kk != "mean"}
                                       for k, v in ratios.items()},
        "raw_images_per_s": {k: [round(x, 4) for x in v] for k, v in rates.items()},
    }
    from tools.published import render_crf_throughput

    print(render_crf_throughput({"kind": "crf_throughput", "command": "(this run)", "data": data}))
    if a.out:
        print(f"wrote {publish_to(a.out, 'crf_throughput', data)}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
