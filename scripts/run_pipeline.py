#!/usr/bin/env python
"""Every stage of an experiment from one config: train_cam (with the method's own
phases) -> make_cam -> eval_cam -> make_pseudo -> eval_pseudo -> train_seg -> eval_seg.

    python scripts/run_pipeline.py --config configs/demo/demo_synthetic.yaml
    python scripts/run_pipeline.py --config CONFIG --stages make_cam,eval_cam
    python scripts/run_pipeline.py --config CONFIG --force eval_cam     # rerun a finished stage
    python scripts/run_pipeline.py --config CONFIG cam.scales=[1.0] --redo-from make_cam   # a changed config, same work_dir
    torchrun --nproc_per_node=4 scripts/run_pipeline.py --config CONFIG

Finished stages are skipped on rerun; an interrupted one resumes. A work_dir holds one
config: a rerun under another config is refused, naming the changed keys, unless
--redo-from STAGE removes that stage's outputs and every later stage's. Ends with a
summary table saved as <work_dir>/metrics/summary.json and .md.
"""
from wsss.cli import parse_args, run_script


def main() -> None:
    def extra(p):
        p.add_argument("--stages", default=None, help="comma-separated subset of pipeline.stages, in order")
        p.add_argument("--force", nargs="?", const="all", default=None,
                       help="rerun finished stages: all of them, or a comma-separated list")
        p.add_argument("--redo-from", default=None, metavar="STAGE",
                       help="remove the outputs of STAGE and of every stage after it, then run")
        p.add_argument("--results", default=None, metavar="JSON",
                       help="also publish the summary there, with the machine and commit (e.g. docs/results/demo.json)")

    cfg, args = parse_args(description=__doc__, extra_args=extra)
    from wsss.engine.distributed import is_main
    from wsss.pipeline import parse_stages, run_pipeline

    stages = parse_stages(args.stages, cfg)
    force = True if args.force == "all" else (parse_stages(args.force, cfg) if args.force else False)
    redo_from = parse_stages(args.redo_from, cfg)[0] if args.redo_from else None
    summary = run_pipeline(cfg, stages, force, redo_from=redo_from)
    if args.results and is_main():
        from tools.published import publish

        print(f"published: {publish(args.results, 'demo', summary)}")


if __name__ == "__main__":
    run_script(main)
