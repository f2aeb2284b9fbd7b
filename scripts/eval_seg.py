#!/usr/bin/env python
"""Multi-scale + flip DeepLab inference (optional CRF): val mIoU -> <work_dir>/metrics/seg_eval.json
and .md, coloured predictions, and with seg.test_split the test PNGs in the evaluation
server's layout (<work_dir>/seg/results/VOC2012/Segmentation/comp6_test_cls/).

    python scripts/eval_seg.py --config CONFIG [seg.crf=true seg.test_split=test]
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run

if __name__ == "__main__":
    run_script(lambda: run(parse_args(description=__doc__)[0], "eval_seg"))
