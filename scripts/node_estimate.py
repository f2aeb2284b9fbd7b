#!/usr/bin/env python
"""Where GSLM's VOC run spends its time on a 4-GPU, 16-core node, before (the official code's
CRF) and after (ours): an estimate whose every input is counted here (FLOPs of our networks,
on meta tensors), measured here (the CRF's core-seconds per image, from
docs/results/benchmark_reference.json and crf_throughput.json) or cited (an A100's ResNet-50
training rate); tools/node_estimate.py says how. Nothing heavy runs.

    python scripts/node_estimate.py --results docs/results/node_estimate.json
"""
import argparse

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/gslm/gslm_r50_voc12.yaml")
    p.add_argument("--results", default=None, help="also publish the estimate there (docs/results/node_estimate.json)")
    a = p.parse_args()
    from tools.node_estimate import estimate, render

    d = estimate(a.config)
    print(render(d))
    if a.results:
        from tools.published import publish

        print(f"published: {publish(a.results, 'node_estimate', d)}")


if __name__ == "__main__":
    run_script(main)
