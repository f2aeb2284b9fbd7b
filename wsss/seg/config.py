"""The ``seg`` config section: DeepLab training on pseudo masks and its evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wsss.config import AugConfig, Backbone, CRFConfig, ScheduleConfig
from wsss.registry import register_finalizer, register_section


def _seg_aug() -> AugConfig:
    return AugConfig(resize_long=[], scale_range=[0.5, 1.5], interpolation="bilinear", crop_size=321)


def _seg_crf() -> CRFConfig:
    # deeplab-pytorch's probability CRF (gt_prob is the label CRF's and unused here)
    return CRFConfig(gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0)


@dataclass
class SegConfig(ScheduleConfig):
    # the DeepLab v2 recipe's schedule (the shared ScheduleConfig fields); the head's biases
    # have their own multiplier and no weight decay
    iterations: int = 20000
    batch_size: int = 10
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    arch: Literal["deeplabv2", "deeplabv3"] = "deeplabv2"
    backbone: Backbone = "resnet101"
    # torchvision weights name, a local file (e.g. a COCO-pretrained DeepLab init), none, or
    # from_cam: the backbone of this experiment's trained CAM network (cam.checkpoint)
    weights: str = "IMAGENET1K_V1"
    output_stride: Literal[8, 16] = 8
    frozen_bn: bool = True
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # training
    train_split: str = "train_aug"
    # default: pseudo.out_dir (the experiment's pseudo masks); or any mask folder: a bare
    # name lies under data.root (SegmentationClassAug), a path is used as is
    mask_dir: str = ""
    head_bias_lr_mult: float = 20.0  # head biases (no weight decay on them)
    workers: int = 4
    log_interval: int = 20
    ckpt_interval: int = 1000
    val_interval: int = 0  # > 0: val mIoU every N iterations (needs GT)
    aug: AugConfig = field(default_factory=_seg_aug)
    # evaluation
    checkpoint: str = ""  # default: <work_dir>/seg/checkpoints/final.pth
    val_split: str = "val"
    test_split: str = ""  # e.g. "test": export PNGs for the evaluation server
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])
    flip: bool = True
    crf: bool = False
    crf_params: CRFConfig = field(default_factory=_seg_crf)
    save_predictions: bool = True  # coloured PNGs of val predictions
    out_dir: str = ""  # default: <work_dir>/seg


register_section("seg", SegConfig)


@register_finalizer
def _finalize_seg(cfg) -> None:
    from pathlib import Path

    s = cfg.seg
    if not s.out_dir:
        s.out_dir = str(Path(cfg.work_dir) / "seg")
    if not s.mask_dir:
        s.mask_dir = cfg.pseudo.out_dir
    if not s.checkpoint:
        s.checkpoint = str(Path(s.out_dir) / "checkpoints" / "final.pth")
    if s.weights == "from_cam":
        s.weights = cfg.cam.checkpoint
