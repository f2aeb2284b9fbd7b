"""PPL's config section (``ppl:``): plain dataclasses, so loading a config imports no model.

Registered by the package's ``__init__``; what each key does: docs/ppl.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PPLStage:
    split_after: int  # patch the output of this stage (1..3); stages split_after+1..4 run per patch
    grid: int = 2  # g: a g x g grid of patches
    epochs: int = -1  # < 0: train.epochs
    lr: float = -1.0  # < 0: train.lr


def _default_stages() -> list[PPLStage]:
    return [PPLStage(1), PPLStage(2), PPLStage(3)]


PPL_MODELS = ("ppl_progressive", "ppl_explicit")


def uses_ppl(tree: dict) -> bool:
    """A config needs the ppl section when its model is a PPL model (set: the YAML's ppl: mapping)."""
    return (tree.get("model") or {}).get("name") in PPL_MODELS


@dataclass
class PPLConfig:
    # progressive: the stages in training order (each moves the split one block deeper)
    stages: list[PPLStage] = field(default_factory=_default_stages)
    # explicit: every split point at once, one grid each
    split_points: list[int] = field(default_factory=lambda: [1, 2, 3])
    grids: list[int] = field(default_factory=lambda: [2, 2, 2])
    cam_source: Literal["concat", "full"] = "concat"
    # fills the cells P pads on each side of a map (a 2x2 grid never pads one of 2+ cells; docs/ppl.md)
    pad_mode: Literal["zeros", "replicate", "reflect"] = "replicate"
    # yes: stages 1..min(model.detach_stage, k) get no gradient for split point k (explicit:
    # the lowest one), so every block after a split trains, as both figures draw it; no: the
    # baseline's stages 1..model.detach_stage, whatever the split (the *_detach2 ablations)
    detach_below_split: bool = True
    # yes: every stage has its own poly schedule from its own lr; no: one poly decay
    # spans all stages (each stage continues where the previous one stopped)
    restart_schedule: bool = True
    # a control of the synthetic bench (docs/synthetic_bench.md): "permuted" merges every
    # patch's output at the next patch's cells (cyclically), so the patch features land in
    # the wrong places; a gain that survives it does not come from where the patches are
    merge_positions: Literal["identity", "permuted"] = "identity"
