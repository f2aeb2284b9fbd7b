#!/usr/bin/env python
"""Multi-scale + flip CAMs, one <id>.npz per image of cam.split (finished ids are skipped).

    python scripts/make_cam.py --config CONFIG [cam.scales=[1.0,0.5,1.5,2.0] cam.redo=true ...]
    torchrun --nproc_per_node=4 scripts/make_cam.py --config CONFIG   # ids sharded across ranks
"""
from wsss.config import parse_args
from wsss.stages import make_cam, run_script

if __name__ == "__main__":
    run_script(lambda: make_cam(parse_args(description=__doc__)[0]))
