"""train_cam: the CAM model's phases (plus any registered extra phases) on the shared engine."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wsss import layout
from wsss.config import Config, ConfigError
from wsss.data.datasets import ClassificationDataset
from wsss.data.labels import ImageLabels
from wsss.data.transforms import TrainTransform
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint, unwrap
from wsss.engine.trainer import Phase, Schedule, TrainContext, make_context, run_phases
from wsss.models.backbones import load_state_dict_checked
from wsss.models.cam_net import multilabel_soft_margin
from wsss.pretrain import ensure_pretrained
from wsss.registry import extra_phase_providers, model_builder, model_phase_plan
from wsss.visualize import cam_overlay


def build_cam_model(cfg: Config, pretrained: bool = True) -> nn.Module:
    """The CAM model the config names; ``pretrained=False`` skips the backbone weights (inference)."""
    if not pretrained:
        cfg = copy.copy(cfg)
        cfg.model = copy.copy(cfg.model)
        cfg.model.weights = "none"
    return model_builder(cfg.model.name)(cfg)


def load_trained_weights(model: nn.Module, checkpoint: str | Path) -> nn.Module:
    """A trained checkpoint's tensors into ``model`` (a checkpoint of another architecture or
    class count fails with the list of tensors that do not fit)."""
    state = load_checkpoint(checkpoint)
    sd = state.get("model", state) if isinstance(state, dict) else state
    load_state_dict_checked(model, sd, str(checkpoint))
    return model


def load_cam_model(cfg: Config, checkpoint: str | Path, device: torch.device | None = None) -> nn.Module:
    """Build the configured model and load trained weights; a checkpoint of another
    architecture or class count fails with the list of tensors that do not fit."""
    model = load_trained_weights(build_cam_model(cfg, pretrained=False), checkpoint)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def cam_param_groups(model: nn.Module, head_lr_mult: float) -> list[dict]:
    backbone, head = unwrap(model).param_groups()
    return [{"params": backbone, "lr_mult": 1.0, "name": "backbone"},
            {"params": head, "lr_mult": head_lr_mult, "name": "head"}]


def load_labels(cfg: Config) -> ImageLabels:
    return ImageLabels.load(cfg.data.label_file, cfg.data.num_classes)


def classification_dataset(cfg: Config, aug=None, mask_dir: str | None = None, split: str | None = None) -> ClassificationDataset:
    layout = VOCLayout(cfg.data.root)
    split = split or cfg.data.train_split
    ids = layout.read_split(split)
    return ClassificationDataset(cfg.data.root, ids, load_labels(cfg), TrainTransform(aug or cfg.train.aug),
                                 mask_dir=mask_dir, split_name=split)


def classification_loss(net: nn.Module, batch: dict, ctx: TrainContext) -> dict:
    out = net(batch["img"])
    cls = multilabel_soft_margin(out["logits"].float(), batch["label"])
    return {"loss": cls, "cls": cls}


def visualize_first(model: nn.Module, batch: dict, outputs: dict) -> np.ndarray | None:
    """Image | CAM of its first GT class, for TensorBoard."""
    model.eval()
    try:
        img = batch["img"][:1]
        cam = unwrap(model).forward_cam(img.float())[0]
        label = batch["label"][0]
        classes = torch.nonzero(label).flatten()
        if len(classes) == 0:
            return None
        c = int(classes[0])
        m = F.interpolate(cam[c][None, None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        m = (m / (m.max() + 1e-5)).cpu().numpy()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        rgb = ((img[0].cpu() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        return np.concatenate([rgb, cam_overlay(rgb, m)], axis=1)
    finally:
        model.train()


def default_cam_phase(cfg: Config, name: str = "cam", **schedule_overrides) -> Phase:
    return Phase(
        name=name,
        schedule=Schedule.from_config(cfg.train, **schedule_overrides),
        build_dataset=lambda ctx: classification_dataset(ctx.cfg),
        compute_loss=classification_loss,
        param_groups=lambda m: cam_param_groups(m, cfg.train.head_lr_mult),
        visualize=visualize_first,
    )


def cam_phases(cfg: Config) -> list[Phase]:
    """The model's own phases, then every registered extra phase (e.g. GSLM rounds)."""
    plan = model_phase_plan(cfg.model.name)
    phases = plan(cfg) if plan else [default_cam_phase(cfg)]
    for provider in extra_phase_providers():
        phases += provider(cfg)
    return phases


def train_cam(cfg: Config, device: torch.device, resume: bool = True) -> Path:
    """Train the configured CAM model through all its phases; returns checkpoints/final.pth."""
    if cfg.train.init_checkpoint and not Path(cfg.train.init_checkpoint).is_file():
        raise ConfigError(f"train.init_checkpoint: {cfg.train.init_checkpoint}: no such file")
    ensure_pretrained(cfg, device)
    ctx = make_context(cfg, device, "train_cam", layout.cam_checkpoints(cfg), "tb")
    model = build_cam_model(cfg)
    if cfg.train.init_checkpoint:
        load_trained_weights(model, cfg.train.init_checkpoint)
        ctx.log(f"weights before the first phase: {cfg.train.init_checkpoint}")
    phases = cam_phases(cfg)
    ctx.log(f"training {cfg.model.name} ({cfg.model.backbone}) in {len(phases)} phase(s): {', '.join(p.name for p in phases)}")
    try:
        return run_phases(model, phases, ctx, resume=resume,
                          final_meta={"model_name": cfg.model.name, "num_classes": cfg.data.num_classes})
    finally:
        if ctx.writer is not None:
            ctx.writer.close()


def train_cam_stage(cfg: Config, device: torch.device, redo: bool) -> dict:
    """The train_cam stage (wsss.stages): ``redo`` starts over."""
    return {"checkpoint": str(train_cam(cfg, device, resume=not redo))}
