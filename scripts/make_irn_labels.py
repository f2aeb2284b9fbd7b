#!/usr/bin/env python
"""IRN's random walk: the CAMs (their stride-4 maps) spread within the trained boundary
network's boundaries -> label PNGs of irn.split in <work_dir>/irn/labels, then their mIoU
on irn.eval_split (-> metrics/irn_eval.{json,md}).

    python scripts/make_irn_labels.py --config CONFIG [irn.redo=true]
    torchrun --nproc_per_node=4 scripts/make_irn_labels.py --config CONFIG   # ids sharded
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run


def main() -> None:
    cfg, _ = parse_args(description=__doc__)
    run(cfg, "make_irn_labels")
    run(cfg, "eval_irn")


if __name__ == "__main__":
    run_script(main)
