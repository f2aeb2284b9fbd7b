#!/usr/bin/env python
"""Train DeepLab on the experiment's pseudo masks (seg.mask_dir, default <work_dir>/pseudo).

    python scripts/train_seg.py --config configs/seg/deeplabv2_r101_voc12.yaml seg.mask_dir=/path/to/masks
    torchrun --nproc_per_node=4 scripts/train_seg.py --config ...

Resumes automatically from <work_dir>/seg/checkpoints/last.pth; --no-resume starts over
(checkpoints trained under another config or on other masks are never resumed).
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run


def main() -> None:
    cfg, args = parse_args(description=__doc__, extra_args=lambda p: p.add_argument(
        "--no-resume", action="store_true", help="remove this work_dir's DeepLab checkpoints and train from the start"))
    run(cfg, "train_seg", redo=args.no_resume)


if __name__ == "__main__":
    run_script(main)
