#!/usr/bin/env python
"""Benchmark every stage on the synthetic mini-VOC; prints a table and writes
<out>/benchmark.json and benchmark.md (rates and ratios, never asserted in a test).

    python scripts/benchmark.py                       # ResNet-18, 128 px, batch 16, 2 workers
    python scripts/benchmark.py --backbone resnet50 --image-size 256 --batch 8 --workers 8   # e.g. on a GPU
    python scripts/benchmark.py --results docs/results/benchmark.json                          # what docs/performance.md quotes

On a CUDA machine it also measures AMP (bf16) and channels_last on and off.
"""
import argparse
import time
from pathlib import Path

from wsss.cli import run_script
from wsss.config import BACKBONES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18", choices=BACKBONES)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="data loader workers (train, make_cam)")
    p.add_argument("--steps", type=int, default=12, help="timed training steps, after --warmup")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=96, help="images for make_cam / make_pseudo / eval_cam (and 2x for memory growth)")
    p.add_argument("--methods", default="cam_net,ppl_progressive,ppl_explicit,gslm_slm")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", default="data/benchmark_voc/VOC2012", help="generated on first use")
    p.add_argument("--out", default="work_dirs/benchmark")
    p.add_argument("--results", default=None, metavar="JSON", help="also publish the results there, with the machine and commit")
    a = p.parse_args()
    from tools.benchmark import markdown, run_benchmark
    from tools.published import publish
    from wsss.reports import run_info
    from wsss.fileio import atomic_write_json, atomic_write_text
    from wsss.lock import claim

    claim(a.out)
    t0 = time.perf_counter()
    res = run_benchmark(a)
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    md = markdown(res)
    print()
    print(md)
    atomic_write_json(Path(a.out) / "benchmark.json", {**res, **run_info()})
    atomic_write_text(Path(a.out) / "benchmark.md", md)
    print(f"saved {Path(a.out) / 'benchmark.json'}")
    if a.results:
        print(f"published: {publish(a.results, 'benchmark', res)}")


if __name__ == "__main__":
    run_script(main)
