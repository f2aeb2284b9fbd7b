#!/usr/bin/env python
"""Throughput of the label CRF on VOC-sized images, pydensecrf against wsss.pseudo.crf_torch:
tools/crf_throughput.py, run as the command that publishes docs/results/crf_throughput.json.

    python scripts/crf_throughput.py --out docs/results/crf_throughput.json   # what docs/crf_torch.md quotes
    python scripts/crf_throughput.py --help
"""
import sys

from tools.crf_throughput import main

if __name__ == "__main__":
    sys.exit(main())
