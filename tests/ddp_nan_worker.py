"""Run under torchrun by test_engine: rank 1's loss is not finite at step 5 (rank 0's is), so
the averaged update makes every rank's weights non-finite. Every rank must stop before rank 0
writes a checkpoint of them."""
import sys
from pathlib import Path

from wsss.cam.training import build_cam_model, cam_param_groups, classification_dataset, classification_loss
from wsss.config import load_config
from wsss.engine.distributed import get_rank, get_world_size
from wsss.engine.trainer import NonFiniteLossError, Phase, Schedule, make_context, run_phases, setup_runtime

if __name__ == "__main__":
    cfg = load_config(sys.argv[1], sys.argv[2:])
    device = setup_runtime(cfg)
    assert get_world_size() == 2
    ctx = make_context(cfg, device, "train_cam", Path(cfg.work_dir) / "checkpoints")
    calls = {"n": 0}

    def loss(net, batch, ctx):
        terms = classification_loss(net, batch, ctx)
        calls["n"] += 1
        bad = get_rank() == 1 and calls["n"] == 6  # step index 5, on rank 1 only
        terms["sr"] = terms["loss"] * (float("nan") if bad else 0.0)
        terms["loss"] = terms["loss"] + terms["sr"]
        return terms

    phase = Phase("cam", Schedule(epochs=3, batch_size=4, workers=0, lr=0.01, log_interval=100, ckpt_interval=2),
                  lambda c: classification_dataset(c.cfg), loss, lambda m: cam_param_groups(m, 10.0))
    try:
        run_phases(build_cam_model(cfg), [phase], ctx)
    except NonFiniteLossError as e:
        print(f"rank {get_rank()}: {e}", flush=True)
        (Path(cfg.work_dir) / f"stopped{get_rank()}").write_text(str(e))
