#!/usr/bin/env python
"""Synthetic data: does the trained classifier name each class from its part?

For every class present in an image of eval_cam.split, its score with the part and with the
part painted over by the body's mean colour, against its score on images without it. A class
still recognised without its part is recognised from bodies and surroundings: its CAM floods.

    python scripts/part_reliance.py --config CONFIG work_dir=WORK_DIR [cam.checkpoint=...]
"""
from tools.part_reliance import part_reliance
from wsss.cli import parse_args, run_script

if __name__ == "__main__":
    run_script(lambda: part_reliance(parse_args(description=__doc__)[0]))
