"""Run under torchrun by test_reference_fidelity: one training step's gradients of a phase's loss.

    python -m torch.distributed.run --nproc_per_node=N tests/ddp_grad_worker.py OUT CONFIG [--irn] [overrides]

The same fixed batch of B images (pseudo masks: the GT masks) is split into N equal
shares, rank r takes share r, and rank 0 saves the gradients DDP leaves on its model
(the average over ranks) as OUT. Run with N=1 it gives the one-process gradients of the
whole batch, which is what the reference computes. With --irn: IRN's boundary network and
its affinity loss on the same images at stride 4.
"""
import sys
from pathlib import Path

import torch

from wsss.cam.training import build_cam_model, cam_phases, classification_dataset
from wsss.config import load_config
from wsss.engine.distributed import get_rank, get_world_size, is_distributed
from wsss.engine.trainer import make_context, setup_runtime

if __name__ == "__main__":
    out, config, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    irn = "--irn" in overrides
    overrides = [o for o in overrides if o != "--irn"]
    cfg = load_config(config, overrides)
    device = setup_runtime(cfg)
    rank, world = get_rank(), get_world_size()
    ctx = make_context(cfg, device, "train_cam", Path(cfg.work_dir) / "checkpoints")
    torch.manual_seed(0)
    if irn:
        from wsss.data.voc import VOCLayout
        from wsss.irn.data import AffinityDataset
        from wsss.irn.model import BoundaryNet
        from wsss.irn.training import irn_phases

        model, phase, keys = BoundaryNet(cfg.irn.backbone, "none"), irn_phases(cfg)[0], ("img", "label")
        ids = VOCLayout(cfg.data.root).read_split("train")
        dataset = AffinityDataset(cfg.data.root, ids, "SegmentationClassAug", cfg.irn.aug, cfg.data.num_classes)
    else:
        model, phase, keys = build_cam_model(cfg), cam_phases(cfg)[-1], ("img", "label", "mask")  # GSLM: an SLM round
        dataset = classification_dataset(cfg, mask_dir="SegmentationClassAug")
    items = [dataset[(i, 7)] for i in range(cfg.train.batch_size)]
    share = len(items) // world
    mine = items[rank * share:(rank + 1) * share]
    batch = {k: torch.stack([it[k] for it in mine]) for k in keys}
    net = model
    if is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(model)
    terms = phase.compute_loss(net, batch, ctx)
    terms["loss"].backward()
    if rank == 0:
        torch.save({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}, out)
