#!/usr/bin/env python
"""Background-threshold sweep of the CAMs against GT: best threshold, mIoU, per-class IoU,
precision and recall -> <work_dir>/metrics/cam_eval.json and .md.

    python scripts/eval_cam.py --config CONFIG [eval_cam.split=train eval_cam.report_threshold=0.15]
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run

if __name__ == "__main__":
    run_script(lambda: run(parse_args(description=__doc__)[0], "eval_cam"))
