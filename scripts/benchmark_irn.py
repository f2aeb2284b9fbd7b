#!/usr/bin/env python
"""IRN on this machine: the random walk per image, ours (sparse) against the reference's dense
procedure (and, with --reference, the reference's own code), and train_irn's rate.

    python scripts/benchmark_irn.py --reference /path/to/GSLM --out docs/results/irn_benchmark.json
    python scripts/benchmark_irn.py --skip-dense-voc       # minutes shorter: no dense walk at 500 x 375

(tools/irn_walk_benchmark.py holds what is measured and how.)
"""
import sys

from tools.irn_walk_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
