#!/usr/bin/env python
"""Check a machine: the pipeline with NCCL and as two gloo ranks on the GPU, AMP (bf16, fp16),
channels_last and torch.compile, on a small VOC-sized dataset made here; prints and saves
what it measured (images/s per stage, data wait, the GPU's idle share, the CRF at 1/8/16
workers, cudnn autotuning's cost). About ten minutes on one GPU.

    python scripts/check_gpu.py                       # -> work_dirs/check_gpu/check_gpu.{json,md}
    python scripts/check_gpu.py --cpu                 # the CPU parts only, small (what CI runs)

Without CUDA it runs the CPU parts and lists the CUDA parts as skipped. Exit status 1 when a
pipeline run failed (its last line and log tail are in the JSON).
"""
import argparse
import json
from pathlib import Path

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work_dirs/check_gpu")
    p.add_argument("--cpu", action="store_true", help="the CPU parts only, even where CUDA is available")
    p.add_argument("--steps", type=int, default=None, help="training steps per phase")
    a = p.parse_args()
    import torch

    from tools.check_gpu import Settings, markdown, run_check
    from wsss.fileio import atomic_write_json, atomic_write_text
    from wsss.lock import claim

    s = Settings(out=a.out, cuda=torch.cuda.is_available() and not a.cpu)
    if not s.cuda:
        s.images, s.crf_images, s.crf_workers = 12, 12, [1, 2]
    if a.steps:
        s.steps = a.steps
    claim(a.out)
    res = run_check(s)
    atomic_write_json(Path(a.out) / "check_gpu.json", res)
    md = markdown(res)
    atomic_write_text(Path(a.out) / "check_gpu.md", md)
    print(md)
    print(f"saved {Path(a.out) / 'check_gpu.json'}")
    if not res["ok"]:
        failed = {k: v.get("error") for k, v in res["runs"].items() if not v.get("ok")}
        print(f"failed runs: {json.dumps(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
