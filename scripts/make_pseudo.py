#!/usr/bin/env python
"""Pseudo masks from CAMs with the label CRF (palette PNGs, 255 = uncertain), then their
evaluation against GT on pseudo.eval_split (both conventions of the evaluation protocol).

    python scripts/make_pseudo.py --config CONFIG [pseudo.fg_thres=0.30 pseudo.bg_thres=0.05 pseudo.workers=8]

Right after train_cam it makes the CAMs it needs first (make_cam's code and checks).
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run


def main() -> None:
    cfg, _ = parse_args(description=__doc__)
    run(cfg, "make_pseudo")
    run(cfg, "eval_pseudo")


if __name__ == "__main__":
    run_script(main)
