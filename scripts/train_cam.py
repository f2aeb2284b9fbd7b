#!/usr/bin/env python
"""Train the CAM model a config names, through all its phases (PPL stages, GSLM rounds).

    python scripts/train_cam.py --config configs/cam/cam_r50_voc12.yaml [key=value ...]
    torchrun --nproc_per_node=4 scripts/train_cam.py --config ...

Resumes automatically from <work_dir>/checkpoints/last.pth; --no-resume starts over
(the work_dir's CAM checkpoints are removed first). Checkpoints trained under another
config are never resumed: that is an error naming the changed keys.
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run


def main() -> None:
    cfg, args = parse_args(description=__doc__, extra_args=lambda p: p.add_argument(
        "--no-resume", action="store_true", help="remove this work_dir's CAM checkpoints and train from the start"))
    run(cfg, "train_cam", redo=args.no_resume)


if __name__ == "__main__":
    run_script(main)
