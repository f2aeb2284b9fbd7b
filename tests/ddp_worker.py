"""Run under torchrun by test_engine: train through the shared engine, then each rank
saves the weights it holds in memory, so the test can compare the ranks."""
import sys
from pathlib import Path

import torch

from wsss.cam.training import build_cam_model, cam_phases
from wsss.config import load_config
from wsss.engine.distributed import get_rank, get_world_size
from wsss.engine.trainer import make_context, run_phases, setup_runtime

if __name__ == "__main__":
    cfg = load_config(sys.argv[1], sys.argv[2:])
    device = setup_runtime(cfg)
    assert get_world_size() == 2
    ctx = make_context(cfg, device, "train_cam", Path(cfg.work_dir) / "checkpoints")
    torch.manual_seed(get_rank())  # different initial weights per rank: DDP must broadcast rank 0's
    model = build_cam_model(cfg)
    run_phases(model, cam_phases(cfg), ctx)
    torch.save(model.state_dict(), Path(cfg.work_dir) / f"rank{get_rank()}.pth")
