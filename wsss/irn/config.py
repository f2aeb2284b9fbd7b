"""The IRN section's schema: the reference recipe's values (IRN's run_sample.py, GSLM's).

Not registered as a config section here: registering it (``register_section("irn",
IRNConfig)``) is the pipeline's wiring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wsss.config import AugConfig, Backbone, ScheduleConfig


def _irn_aug() -> AugConfig:
    # VOC12AffinityDataset: random rescale 0.5-1.5 (image bicubic, mask nearest), flip,
    # random crop 512 (image 0 after normalisation, mask 255); no long-side resize
    return AugConfig(resize_long=[], scale_range=[0.5, 1.5], interpolation="bicubic", hflip=True, crop_size=512)


@dataclass
class IRNConfig(ScheduleConfig):
    # train_irn: 3 epochs, batch 32 (IRN; GSLM 16), lr 0.1, weight decay 1e-4, poly 0.9.
    # The reference's PolyOptimizer puts the weight decay into SGD's momentum slot
    # (momentum 1e-4); momentum=1e-4 restores it exactly.
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    head_lr_mult: float = 1.0  # the boundary branch is the only thing that trains
    momentum: float = 0.0
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    backbone: Backbone = "resnet50"
    weights: str = "IMAGENET1K_V1"  # the reference's resnet50-19c8e357.pth: torchvision's V1 weights
    radius: int = 10  # training pairs (stride 4)
    train_split: str = "train_aug"
    mask_dir: str = ""  # the relation labels; default: pseudo.out_dir
    aug: AugConfig = field(default_factory=_irn_aug)
    workers: int = 4
    log_interval: int = 20
    ckpt_interval: int = 200
    # make_irn_labels (make_sem_seg_labels)
    checkpoint: str = ""  # default: <out_dir>/checkpoints/final.pth
    cam_dir: str = ""  # default: cam.out_dir
    split: str = "train"
    walk_radius: int = 5
    beta: float = 10.0
    exp_times: int = 8  # 2**8 = 256 steps
    bg_thres: float = 0.25  # sem_seg_bg_thres
    infer_canvas: int = 512  # images padded to this square (the reference's crop_size)
    walk: Literal["sparse", "dense"] = "sparse"
    out_dir: str = ""  # default: <work_dir>/irn
    redo: bool = False
