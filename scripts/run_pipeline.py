#!/usr/bin/env python
"""Every stage of an experiment from one config: train_cam (with the method's own
phases) -> make_cam -> eval_cam -> make_pseudo -> eval_pseudo -> train_seg -> eval_seg.

    python scripts/run_pipeline.py --config configs/demo/demo_synthetic.yaml
    python scripts/run_pipeline.py --config CONFIG --stages make_cam,eval_cam
    python scripts/run_pipeline.py --config CONFIG --force eval_cam     # redo a finished stage
    torchrun --nproc_per_node=4 scripts/run_pipeline.py --config CONFIG

Finished stages are skipped on rerun; an interrupted one resumes. Ends with a
summary table saved as <work_dir>/metrics/summary.json and .md.
"""
from wsss.config import parse_args
from wsss.stages import run_script


def main() -> None:
    def extra(p):
        p.add_argument("--stages", default=None, help="comma-separated subset of pipeline.stages, in order")
        p.add_argument("--force", nargs="?", const="all", default=None,
                       help="rerun finished stages: all of them, or a comma-separated list")

    cfg, args = parse_args(description=__doc__, extra_args=extra)
    from wsss.pipeline import parse_stages, run_pipeline

    stages = parse_stages(args.stages, cfg)
    force = True if args.force == "all" else (parse_stages(args.force, cfg) if args.force else False)
    run_pipeline(cfg, stages, force)


if __name__ == "__main__":
    run_script(main)
