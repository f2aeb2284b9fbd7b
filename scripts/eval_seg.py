#!/usr/bin/env python
"""Multi-scale + flip DeepLab inference (optional CRF): val mIoU -> <work_dir>/metrics/seg_eval.json
and .md, coloured predictions, and with seg.test_split the test PNGs in the evaluation
server's layout (<work_dir>/seg/results/VOC2012/Segmentation/comp6_test_cls/).

    python scripts/eval_seg.py --config CONFIG [seg.crf=true seg.test_split=test]
"""
from wsss.config import parse_args
from wsss.stages import eval_seg, run_script

if __name__ == "__main__":
    run_script(lambda: eval_seg(parse_args(description=__doc__)[0]))
