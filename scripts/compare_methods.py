#!/usr/bin/env python
"""Run baseline CAM, PPL progressive, PPL explicit and GSLM through the full pipeline on the
same synthetic data and write one side-by-side table (CAM mIoU at the best threshold,
pseudo-mask mIoU, seg mIoU, train time) to <out>/comparison.json and .md.

    python scripts/compare_methods.py                       # about 40 minutes on 2 CPU cores
    python scripts/compare_methods.py --out work_dirs/compare train.epochs=4   # overrides go to every run
"""
import argparse
from pathlib import Path

from wsss.stages import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work_dirs/compare")
    p.add_argument("--stages", default=None, help="comma-separated subset of the pipeline stages")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every method's config")
    a = p.parse_args()
    from wsss.compare import DEFAULT_METHODS, run_comparison

    run_comparison(DEFAULT_METHODS, Path(a.out), a.overrides, a.stages)


if __name__ == "__main__":
    run_script(main)
