"""GSLM's config section (``gslm:``): a plain dataclass, so loading a config imports no model.

Registered by the package's ``__init__``; what the rounds compute: gslm/slm.py and docs/methods.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wsss.config import ScheduleConfig


@dataclass
class GSLMConfig(ScheduleConfig):
    """The SLM rounds. Each round trains with this section's schedule (the shared
    :class:`ScheduleConfig` fields, with the reference SLM recipe's defaults: head 10x,
    momentum 0 as the GLM's optimizer quirk, wd 1e-4); loader and logging as ``train``."""

    epochs: int = 10  # E per round
    lr: float = 0.001  # backbone; head at lr * head_lr_mult
    batch_size: int = 0  # 0: train.batch_size
    rounds: int = 0  # R SLM rounds after the GLM; 0 = the GLM alone
    sr_weight: float = 0.5  # lambda; 0 = the "no SR loss" ablation
    beta: float = 6.0  # boundary of the seed reactivation targets
    report_threshold_start: float = 0.15  # round r reports at start + step * (r - 1); the GLM at start
    report_threshold_step: float = 0.1
    evaluate: bool = True  # evaluate CAMs and pseudo masks of every round
    # CAMs the rounds (r >= 1) are scored on. cam_files: the round's CAM files (cam.resize_mode).
    # nearest: CAMs of eval_cam.split made again with the nearest-resized pyramid, as the
    # reference's per-round evaluation does (its GLM is scored on its CAM files).
    round_eval_cams: Literal["cam_files", "nearest"] = "cam_files"
    # Round 1's SR targets: "" = the GLM's pseudo masks (the method); a mask folder (a bare
    # name under data.root, e.g. SegmentationClassAug, or a path) = a control run, such as
    # ground-truth targets, which shows what the SLM machinery can do with right targets.
    target_masks: str = ""
