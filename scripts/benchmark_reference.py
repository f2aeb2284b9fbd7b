#!/usr/bin/env python
"""Our make_cam, train_cam and make_pseudo side by side with plain loops of the reference
procedure (tools/reference_loops.py) and, given a checkout of it, the official GSLM code
itself (tools/reference_code.py) on VOC-sized synthetic images: whole-process wall time
of interleaved pairs, ratios (reference / ours), system CPU time, peak RSS, the CAM
difference and the pseudo-mask identity between the sides, and our cost at N and 2N images.
Writes <out>/benchmark_reference.{json,md}; speed is never asserted in a test.

    python scripts/benchmark_reference.py                                  # ResNet-50, all stages, 3 pairs each
    python scripts/benchmark_reference.py --stages make_cam --repeats 5
    python scripts/benchmark_reference.py --ours runtime.channels_last=true   # an opt-in switch on our side
    python scripts/benchmark_reference.py --reference-code ~/src/GSLM        # also the official code (and the loops' calibration)
    python scripts/benchmark_reference.py --results docs/results/benchmark_reference.json   # what docs/performance.md quotes
"""
import argparse
from pathlib import Path

from wsss.cli import run_script
from wsss.config import BACKBONES


def main() -> None:
    from tools.benchmark_reference import Settings

    d = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(d.stages), help="comma-separated: make_cam, train_cam, make_pseudo")
    p.add_argument("--repeats", type=int, default=d.repeats, help="interleaved pairs per stage")
    p.add_argument("--backbone", default=d.backbone, choices=BACKBONES)
    p.add_argument("--cam-images", type=int, default=d.cam_images)
    p.add_argument("--cam-workers", type=int, default=d.cam_workers, help="make_cam loader workers (both sides)")
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--train-batch", type=int, default=d.train_batch)
    p.add_argument("--train-workers", type=int, default=d.train_workers)
    p.add_argument("--pseudo-images", type=int, default=d.pseudo_images)
    p.add_argument("--pseudo-workers", default=",".join(map(str, d.pseudo_workers)), help="comma-separated pool sizes")
    p.add_argument("--no-scaling", action="store_true", help="skip our runs at N and 2N images")
    p.add_argument("--profile", action="store_true", help="also profile make_cam and train_cam (torch.profiler, both sides) and make_pseudo (by part)")
    p.add_argument("--before", action="store_true", help="make_cam also as our loop was before the heap/kept-class/"
                   "CPU-batching changes (a third side; what they bought)")
    p.add_argument("--reference-code", default=None, metavar="DIR",
                   help="a checkout of github.com/Wheat2018/GSLM: its own steps as a third side (ResNet-50 only; "
                        "needs imageio and matplotlib), which also calibrates the plain loops")
    p.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for our side only")
    p.add_argument("--data-root", default=d.data_root, help="generated on first use (VOC-sized, 20 classes)")
    p.add_argument("--out", default=d.out)
    p.add_argument("--results", default=None, help="also publish the results here (e.g. docs/results/benchmark_reference.json)")
    a = p.parse_args()
    from tools.benchmark_reference import markdown, run_all
    from wsss.fileio import atomic_write_json, atomic_write_text

    s = Settings(data_root=a.data_root, out=a.out, backbone=a.backbone, stages=a.stages.split(","), repeats=a.repeats,
                 cam_images=a.cam_images, cam_workers=a.cam_workers, train_images=a.train_images, train_batch=a.train_batch,
                 train_workers=a.train_workers, pseudo_images=a.pseudo_images,
                 pseudo_workers=[int(w) for w in a.pseudo_workers.split(",")], scaling=not a.no_scaling, ours_extra=a.ours,
                 profile=a.profile, before=a.before, reference_code=a.reference_code)
    if a.reference_code:
        from tools.reference_code import check_checkout

        try:
            check_checkout(a.reference_code)  # before any compute
        except ValueError as e:
            p.error(str(e))
        if a.backbone != "resnet50":
            p.error("--reference-code: the GSLM code's CAM network is ResNet-50 (--backbone resnet50)")
    res = run_all(s, after_stage=lambda r: atomic_write_json(Path(a.out) / "benchmark_reference.partial.json", r))
    md = markdown(res)
    print()
    print(md)
    atomic_write_json(Path(a.out) / "benchmark_reference.json", res)
    atomic_write_text(Path(a.out) / "benchmark_reference.md", md)
    print(f"saved {Path(a.out) / 'benchmark_reference.json'}")
    if a.results:
        from tools.published import publish

        print(f"published: {publish(a.results, 'benchmark_reference', res)}")


if __name__ == "__main__":
    run_script(main)
