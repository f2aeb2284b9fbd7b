"""train_seg: DeepLab on the pseudo masks of an experiment (or any mask folder), on the shared engine."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from wsss import layout
from wsss.config import Config
from wsss.data.datasets import SegmentationDataset
from wsss.data.transforms import TrainTransform
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import unwrap
from wsss.engine.distributed import all_reduce_sum
from wsss.engine.trainer import Phase, Schedule, TrainContext, make_context, run_phases
from wsss.models.deeplab import build_deeplab, seg_param_groups, segmentation_loss
from wsss.pretrain import ensure_pretrained


def seg_schedule(cfg: Config) -> Schedule:
    return Schedule.from_config(cfg.seg, max_steps=cfg.train.max_steps)


def seg_loss(net: nn.Module, batch: dict, ctx: TrainContext) -> dict:
    n_valid = (batch["mask"] != 255).sum()
    if ctx.world_size > 1:
        # the recipe's loss is a mean over the whole batch's valid pixels; each rank holds a
        # share of them, and DDP averages the ranks' gradients: normalising by the global count
        # (times the world size) gives N ranks the gradients of one process on the batch
        n_valid = all_reduce_sum(n_valid.float()) / ctx.world_size
    loss = segmentation_loss(net(batch["img"]), batch["mask"], n_valid)
    return {"loss": loss, "ce": loss}


def seg_phase(cfg: Config) -> Phase:
    s = cfg.seg

    def dataset(ctx: TrainContext) -> SegmentationDataset:
        ids = VOCLayout(cfg.data.root).read_split(s.train_split)
        return SegmentationDataset(cfg.data.root, ids, s.mask_dir, TrainTransform(s.aug), cfg.data.num_classes,
                                   split_name=s.train_split)

    def validate(model: nn.Module, ctx: TrainContext) -> dict:
        from wsss.seg.evaluate import evaluate_split

        if not ctx.is_main:
            return {}
        r = evaluate_split(cfg, unwrap(model), ctx.device, s.val_split, scales=[1.0], flip=False, crf=False,
                           save_dir=None, progress=False)
        return {"miou": r["miou"]}

    return Phase(name="deeplab", schedule=seg_schedule(cfg), build_dataset=dataset, compute_loss=seg_loss,
                 param_groups=lambda m: seg_param_groups(unwrap(m), s.head_lr_mult, s.head_bias_lr_mult),
                 validate=validate if s.val_interval > 0 else None, batch_key="seg.batch_size")


def seg_phases(cfg: Config) -> list[Phase]:
    return [seg_phase(cfg)]


def train_seg(cfg: Config, device: torch.device, resume: bool = True) -> Path:
    """DeepLab on seg.mask_dir; returns seg.checkpoint."""
    if cfg.seg.weights == cfg.model.weights:
        ensure_pretrained(cfg, device)  # the project's pretrained start, as the CAM network's
    ctx = make_context(cfg, device, "train_seg", layout.seg_checkpoints(cfg), "tb_seg")
    model = build_deeplab(cfg.seg, cfg.data.num_classes + 1)
    ctx.log(f"training {cfg.seg.arch} ({cfg.seg.backbone}) on masks in {cfg.seg.mask_dir}")
    try:
        return run_phases(model, seg_phases(cfg), ctx, resume=resume, final_path=Path(cfg.seg.checkpoint),
                          final_meta={"arch": cfg.seg.arch, "num_classes": cfg.data.num_classes + 1})
    finally:
        if ctx.writer is not None:
            ctx.writer.close()


def train_seg_stage(cfg: Config, device, redo: bool) -> dict:
    """The train_seg stage (wsss.stages): ``redo`` starts over."""
    return {"checkpoint": str(train_seg(cfg, device, resume=not redo))}
