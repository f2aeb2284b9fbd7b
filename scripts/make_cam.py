#!/usr/bin/env python
"""Multi-scale + flip CAMs, one <id>.npz per image of cam.split (finished ids are skipped).

    python scripts/make_cam.py --config CONFIG [cam.scales=[1.0,0.5,1.5,2.0] cam.redo=true ...]
    torchrun --nproc_per_node=4 scripts/make_cam.py --config CONFIG   # ids sharded across ranks
"""
from wsss.cli import parse_args, run_script
from wsss.stages import run

if __name__ == "__main__":
    run_script(lambda: run(parse_args(description=__doc__)[0], "make_cam"))
