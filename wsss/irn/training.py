"""train_irn and make_irn_labels on the shared engine (one phase: the boundary branch).

Both take the experiment's config and the IRN section (``irn``: an
:class:`wsss.irn.config.IRNConfig`; default ``cfg.irn`` once the section is registered).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from wsss.config import Config, save_config
from wsss.data.synthetic import ensure_data
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint, unwrap
from wsss.engine.trainer import Phase, Schedule, TrainContext, make_context, run_phases, setup_runtime
from wsss.irn.config import IRNConfig
from wsss.irn.data import AffinityDataset
from wsss.irn.indexing import pair_index, relation_labels
from wsss.irn.loss import boundary_loss, pair_affinity
from wsss.irn.model import BoundaryNet
from wsss.models.backbones import load_state_dict_checked


def resolved(cfg: Config, irn: IRNConfig | None = None) -> IRNConfig:
    """A copy of the section with its derived defaults filled in (folders, checkpoint)."""
    irn = copy.deepcopy(irn if irn is not None else cfg.irn)
    if not irn.out_dir:
        irn.out_dir = str(Path(cfg.work_dir) / "irn")
    if not irn.mask_dir:
        irn.mask_dir = cfg.pseudo.out_dir
    if not irn.cam_dir:
        irn.cam_dir = cfg.cam.out_dir
    if not irn.checkpoint:
        irn.checkpoint = str(Path(irn.out_dir) / "checkpoints" / "final.pth")
    return irn


def irn_loss(net: nn.Module, batch: dict, radius: int) -> dict:
    """The boundary loss of one batch: ``img`` [B, 3, S, S], ``label`` [B, S/4, S/4]."""
    logits = net(batch["img"]).float()
    labels = batch["label"]
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        raise ValueError(f"boundary map {tuple(logits.shape[-2:])} and reduced mask {tuple(labels.shape[-2:])} differ")
    index = pair_index(radius)
    bg_pos, fg_pos, neg = relation_labels(labels, index)
    return boundary_loss(pair_affinity(torch.sigmoid(logits[:, 0]), index), bg_pos, fg_pos, neg)


def irn_phase(cfg: Config, irn: IRNConfig) -> Phase:
    def dataset(ctx: TrainContext) -> AffinityDataset:
        ids = VOCLayout(cfg.data.root).read_split(irn.train_split)
        return AffinityDataset(cfg.data.root, ids, irn.mask_dir, irn.aug, cfg.data.num_classes, split_name=irn.train_split)

    return Phase(name="irn", schedule=Schedule.from_config(irn, max_steps=cfg.train.max_steps), build_dataset=dataset,
                 compute_loss=lambda net, batch, ctx: irn_loss(net, batch, irn.radius),
                 param_groups=lambda m: [{"params": unwrap(m).edge_parameters(), "lr_mult": 1.0, "name": "edge"}])


def train_irn(cfg: Config, irn: IRNConfig | None = None, resume: bool = True) -> Path:
    """Train the boundary network on the pseudo masks; returns its final checkpoint."""
    irn = resolved(cfg, irn)
    device = setup_runtime(cfg)
    ensure_data(cfg)
    ctx = make_context(cfg, device, Path(irn.out_dir) / "checkpoints", tb_subdir="tb_irn")
    if ctx.is_main:
        save_config(cfg)
    model = BoundaryNet(irn.backbone, irn.weights)
    ctx.log(f"training the IRN boundary network ({irn.backbone}) on the masks in {irn.mask_dir}")
    try:
        return run_phases(model, [irn_phase(cfg, irn)], ctx, resume=resume, final_path=Path(irn.checkpoint),
                          final_meta={"arch": irn.backbone, "model_name": "irn_boundary"})
    finally:
        if ctx.writer is not None:
            ctx.writer.close()


def load_boundary_net(irn: IRNConfig, checkpoint: str | Path | None = None,
                      device: torch.device | str = "cpu") -> BoundaryNet:
    """The trained boundary network (weights read without unpickling objects)."""
    path = checkpoint or irn.checkpoint
    state = load_checkpoint(path)
    model = BoundaryNet(irn.backbone, "none")
    load_state_dict_checked(model, state.get("model", state), str(path))
    return model.eval().to(device)


def make_irn_labels(cfg: Config, irn: IRNConfig | None = None, split: str | None = None,
                    out_dir: str | Path | None = None) -> dict:
    """The random-walk label maps of ``split`` (default ``irn.split``) as palette PNGs in
    ``out_dir`` (default ``<irn.out_dir>/labels``)."""
    from wsss.irn.labels import make_irn_labels as _make

    irn = resolved(cfg, irn)
    device = setup_runtime(cfg)
    split = split or irn.split
    ids = VOCLayout(cfg.data.root).read_split(split)
    model = load_boundary_net(irn, device=device)
    out = Path(out_dir or Path(irn.out_dir) / "labels")
    summary = _make(model, cfg.data.root, ids, irn.cam_dir, out, irn, cfg.train.aug.mean, cfg.train.aug.std,
                    device=device, redo=irn.redo, progress=cfg.runtime.progress)
    return {"split": split, **summary}
