"""The IRN stages' work on the shared engine: train_irn (one phase: the boundary branch),
make_irn_labels (the random walk over a split) and eval_irn (the labels against GT)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from wsss import layout
from wsss.config import Config
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint, unwrap
from wsss.engine.distributed import all_reduce_sum, barrier, get_world_size, is_main
from wsss.engine.trainer import Phase, Schedule, TrainContext, make_context, run_phases
from wsss.irn.data import AffinityDataset
from wsss.irn.indexing import pair_index, relation_labels
from wsss.irn.loss import boundary_loss, pair_affinity
from wsss.irn.model import BoundaryNet
from wsss.models.backbones import load_state_dict_checked
from wsss.reports import md_table, pct, save_metrics


def irn_loss(net: nn.Module, batch: dict, radius: int, world_size: int = 1) -> dict:
    """The boundary loss of one batch: ``img`` [B, 3, S, S], ``label`` [B, S/4, S/4].

    The reference takes each of its three ratios over the whole batch (one process). Under
    DDP each rank holds a share of the pairs and the ranks' gradients are averaged, so each
    rank divides by the whole batch's pair counts over the world size: N ranks then take
    one process's step (per-rank ratios gave multi-GPU IRN runs other numbers)."""
    logits = net(batch["img"]).float()
    labels = batch["label"]
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        raise ValueError(f"boundary map {tuple(logits.shape[-2:])} and reduced mask {tuple(labels.shape[-2:])} differ")
    index = pair_index(radius)
    bg_pos, fg_pos, neg = relation_labels(labels, index)
    counts = None
    if world_size > 1:
        counts = all_reduce_sum(torch.stack([bg_pos.sum(), fg_pos.sum(), neg.sum()]).double()).float()
    return boundary_loss(pair_affinity(torch.sigmoid(logits[:, 0]), index), bg_pos, fg_pos, neg, counts, world_size)


def irn_phases(cfg: Config) -> list[Phase]:
    irn = cfg.irn

    def dataset(ctx: TrainContext) -> AffinityDataset:
        ids = VOCLayout(cfg.data.root).read_split(irn.train_split)
        return AffinityDataset(cfg.data.root, ids, irn.mask_dir, irn.aug, cfg.data.num_classes, split_name=irn.train_split)

    return [Phase(name="irn", schedule=Schedule.from_config(irn, max_steps=cfg.train.max_steps), build_dataset=dataset,
                  compute_loss=lambda net, batch, ctx: irn_loss(net, batch, irn.radius, ctx.world_size),
                  param_groups=lambda m: [{"params": unwrap(m).edge_parameters(), "lr_mult": 1.0, "name": "edge"}],
                  batch_key="irn.batch_size")]


def train_irn(cfg: Config, device: torch.device, resume: bool = True) -> Path:
    """Train the boundary network on the relation labels (irn.mask_dir); returns irn.checkpoint."""
    from wsss.pretrain import ensure_pretrained

    irn = cfg.irn
    if irn.weights == cfg.model.weights:
        ensure_pretrained(cfg, device)  # the project's pretrained start, as the CAM network's
    ctx = make_context(cfg, device, "train_irn", layout.irn_checkpoints(cfg), "tb_irn")
    model = BoundaryNet(irn.backbone, irn.weights)
    ctx.log(f"training the IRN boundary network ({irn.backbone}) on the masks in {irn.mask_dir}")
    try:
        return run_phases(model, irn_phases(cfg), ctx, resume=resume, final_path=Path(irn.checkpoint),
                          final_meta={"arch": irn.backbone, "model_name": "irn_boundary"})
    finally:
        if ctx.writer is not None:
            ctx.writer.close()


def load_boundary_net(backbone: str, checkpoint: str | Path, device: torch.device | str = "cpu") -> BoundaryNet:
    """The trained boundary network (weights read without unpickling objects)."""
    state = load_checkpoint(checkpoint)
    model = BoundaryNet(backbone, "none")
    load_state_dict_checked(model, state.get("model", state), str(checkpoint))
    return model.eval().to(device)


def train_irn_stage(cfg: Config, device: torch.device, redo: bool) -> dict:
    """The train_irn stage (wsss.stages): ``redo`` starts over."""
    return {"checkpoint": str(train_irn(cfg, device, resume=not redo))}


def make_irn_labels_stage(cfg: Config, device: torch.device, redo: bool) -> dict:
    """The make_irn_labels stage (wsss.stages): label PNGs of irn.split in <irn.out_dir>/labels,
    each rank its share of the ids."""
    from wsss.irn.labels import make_irn_labels

    irn = cfg.irn
    ids = VOCLayout(cfg.data.root).read_split(irn.split)
    model = None if irn.boundary == "zeros" else load_boundary_net(irn.backbone, irn.checkpoint, device)
    summary = make_irn_labels(model, cfg.data.root, ids, irn.cam_dir, layout.irn_labels(cfg), irn, irn.aug.mean,
                              irn.aug.std, device=device, redo=redo, progress=cfg.runtime.progress)
    summary = {"split": irn.split, **summary}
    barrier()
    if is_main():
        summary["ranks"] = get_world_size()
        save_metrics(cfg, "make_irn_labels", summary, md_table(
            ["split", "images", "computed (rank 0)", "images/s (rank 0)"],
            [[irn.split, summary["images"], summary["computed"], f"{summary['images_per_s']:.2f}"]]))
        print(f"IRN labels of {summary['images']} images in {summary['out_dir']} ({summary['computed']} computed on "
              f"rank 0, {summary['images_per_s']:.2f} images/s)")
    return summary


def eval_irn_stage(cfg: Config, device, redo: bool) -> dict:
    """The eval_irn stage (wsss.stages): the random-walk labels of irn.eval_split against GT
    (they have no uncertain pixels: both conventions of the protocol give one number)."""
    from wsss.data.labels import ImageLabels
    from wsss.parallel import workers_for
    from wsss.pseudo.make import evaluate_masks
    from wsss.reports import per_class_rows

    irn = cfg.irn
    if not irn.eval_split:
        return {}
    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    r = evaluate_masks(cfg, layout.irn_labels(cfg), irn.eval_split, names, workers=workers_for(cfg.pseudo.workers, whole_node=True))
    md = (f"# IRN labels ({r['split']}, {r['num_images']} images)\n\nmIoU **{pct(r['miou_255_as_background'])}**\n\n"
          + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r["ignored_as_background"])))
    j, _ = save_metrics(cfg, "irn_eval", r, md)
    print(f"IRN label mIoU on {r['split']}: {pct(r['miou_255_as_background'])}")
    print(f"saved {j}")
    return r
