"""Run under torchrun by test_gpu_readiness: two ranks make CAM files and pseudo masks into one
folder. Rank 1 writes slowly (each temporary file lives a while before its rename) and rank 0
clears leftover temporary files slowly: a rank must never remove another rank's half-written
file (its rename would fail)."""
import sys
import time
from pathlib import Path

import torch

import wsss.fileio as fileio
from wsss.cam.make import make_cams
from wsss.cam.training import build_cam_model
from wsss.config import load_config
from wsss.engine.distributed import barrier, get_rank
from wsss.engine.trainer import setup_runtime
from wsss.pseudo.make import make_pseudo_masks

if __name__ == "__main__":
    cfg = load_config(sys.argv[1], sys.argv[2:])
    device = setup_runtime(cfg)
    if get_rank() == 1:
        real = fileio.atomic_path

        def slow_atomic_path(path, suffix=None):
            ctx = real(path, suffix)

            class Slow:
                def __enter__(self):
                    tmp = ctx.__enter__()
                    Path(tmp).touch()
                    time.sleep(0.6)  # the temporary file exists while the other rank runs
                    return tmp

                def __exit__(self, *exc):
                    return ctx.__exit__(*exc)

            return Slow()

        fileio.atomic_path = slow_atomic_path
    else:
        real_remove = fileio.remove_stale_temps

        def slow_remove(directory):
            time.sleep(0.3)
            return real_remove(directory)

        for mod in list(sys.modules.values()):  # wherever it was imported by name
            if getattr(mod, "remove_stale_temps", None) is real_remove:
                mod.remove_stale_temps = slow_remove
    torch.manual_seed(0)
    model = build_cam_model(cfg).eval()
    out = Path(cfg.work_dir) / "cams"
    make_cams(cfg, model, device, split="train", out_dir=out)
    barrier()
    make_pseudo_masks(cfg, split="train", cam_dir=out, out_dir=Path(cfg.work_dir) / "pseudo", workers=0)
    barrier()
    print(f"rank {get_rank()} done", flush=True)
