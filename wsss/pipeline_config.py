"""The ``pipeline`` config section: which stages run_pipeline runs, in order."""
from __future__ import annotations

from dataclasses import dataclass, field

from wsss.registry import register_section

ALL_STAGES = ["train_cam", "make_cam", "eval_cam", "make_pseudo", "eval_pseudo", "train_seg", "eval_seg"]


@dataclass
class PipelineConfig:
    stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    visualize_ids: int = 4  # how many ids get a side-by-side visualisation PNG


register_section("pipeline", PipelineConfig)
