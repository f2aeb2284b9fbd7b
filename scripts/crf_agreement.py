#!/usr/bin/env python
"""Agreement of the PyTorch dense CRF (wsss.pseudo.crf_torch) with pydensecrf on VOC-sized
images: tools/crf_agreement.py, run as the command that publishes docs/results/crf_agreement.json.

    python scripts/crf_agreement.py --out docs/results/crf_agreement.json   # what docs/crf_torch.md quotes
    python scripts/crf_agreement.py --help
"""
import sys

from tools.crf_agreement import main

if __name__ == "__main__":
    sys.exit(main())
