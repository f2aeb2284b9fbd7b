#!/usr/bin/env python
"""Does IRN improve the pseudo masks it learns from? IRN and its controls over training seeds,
on a finished run's CAMs and pseudo masks (synthetic data).

    python scripts/irn_bench.py --config configs/demo/demo_synthetic.yaml --source work_dirs/demo_synthetic \
        --out work_dirs/irn_bench --seeds 0 1 2 --results docs/results/irn_synthetic.json

(tools/irn_bench.py holds the arms, the controls and what is scored.)
"""
import sys

from tools.irn_bench import main

if __name__ == "__main__":
    sys.exit(main())
