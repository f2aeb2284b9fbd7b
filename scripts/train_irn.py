#!/usr/bin/env python
"""Train IRN's boundary network on the experiment's pseudo masks (their pixel relations).

    python scripts/train_irn.py --config CONFIG [irn.batch_size=16 ...]
    torchrun --nproc_per_node=4 scripts/train_irn.py --config CONFIG

Resumes from <work_dir>/irn/checkpoints/last.pth; --no-resume starts over.
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run


def main() -> None:
    cfg, args = parse_args(description=__doc__, extra_args=lambda p: p.add_argument(
        "--no-resume", action="store_true", help="remove this work_dir's IRN checkpoints and train from the start"))
    run(cfg, "train_irn", redo=args.no_resume)


if __name__ == "__main__":
    run_script(main)
