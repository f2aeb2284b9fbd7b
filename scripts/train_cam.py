#!/usr/bin/env python
"""Train the CAM model a config names, through all its phases (PPL stages, GSLM rounds).

    python scripts/train_cam.py --config configs/cam/cam_r50_voc12.yaml [key=value ...]
    torchrun --nproc_per_node=4 scripts/train_cam.py --config ...

Resumes automatically from <work_dir>/checkpoints/last.pth; --no-resume starts over.
"""
from wsss.config import parse_args
from wsss.stages import run_script, train_cam


def main() -> None:
    cfg, args = parse_args(description=__doc__, extra_args=lambda p: p.add_argument(
        "--no-resume", action="store_true", help="ignore last.pth and finished phases' checkpoints"))
    if args.no_resume:
        from wsss.cam.training import train_cam as train

        print(f"final weights: {train(cfg, resume=False)}")
        return
    train_cam(cfg)


if __name__ == "__main__":
    run_script(main)
