#!/usr/bin/env python
"""Side-by-side PNGs (image | CAM overlay per class | pseudo mask | GT) under <work_dir>/vis.

    python scripts/visualize.py --config CONFIG [--n 8 | --ids 2007_000032 2007_000039]
"""
from wsss.cli import parse_args, run_script
from wsss.stages import visualize


def main() -> None:
    def extra(p):
        p.add_argument("--n", type=int, default=None, help="first N ids of the evaluation split")
        p.add_argument("--ids", nargs="+", default=None, help="these ids")

    cfg, args = parse_args(description=__doc__, extra_args=extra)
    for path in visualize(cfg, n=args.n, ids=args.ids):
        print(path)


if __name__ == "__main__":
    run_script(main)
