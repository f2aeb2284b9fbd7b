#!/usr/bin/env python
"""Train DeepLab on the experiment's pseudo masks (seg.mask_dir, default <work_dir>/pseudo).

    python scripts/train_seg.py --config configs/seg/deeplabv2_r101_voc12.yaml seg.mask_dir=/path/to/masks
    torchrun --nproc_per_node=4 scripts/train_seg.py --config ...

Resumes automatically from <work_dir>/seg/checkpoints/last.pth.
"""
from wsss.config import parse_args
from wsss.stages import run_script, train_seg

if __name__ == "__main__":
    run_script(lambda: train_seg(parse_args(description=__doc__)[0]))
