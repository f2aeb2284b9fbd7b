#!/usr/bin/env python
"""Pseudo masks from CAMs with the label CRF (palette PNGs, 255 = uncertain), then their
evaluation against GT on pseudo.eval_split (both conventions of the evaluation protocol).

    python scripts/make_pseudo.py --config CONFIG [pseudo.fg_thres=0.30 pseudo.bg_thres=0.05 pseudo.workers=8]

Right after train_cam it makes the CAMs it needs first (make_cam's code and checks).
"""
from wsss.config import parse_args
from wsss.stages import eval_pseudo, make_pseudo, run_script


def main() -> None:
    cfg, _ = parse_args(description=__doc__)
    make_pseudo(cfg)
    eval_pseudo(cfg)


if __name__ == "__main__":
    run_script(main)
