"""PPL's model builders and training phases (registered with the shared layer by ``ppl_wsss/__init__.py``).

    model.name: ppl_progressive   one model trained stage after stage (Fig. 2)
    model.name: ppl_explicit      all split points in one forward pass (Fig. 5)

What P, M and C compute, which blocks each stage trains and why: docs/ppl.md.
"""
from __future__ import annotations

from ppl_wsss.config import PPLConfig, PPLStage  # noqa: F401  (re-exported: ppl_wsss.method.PPLConfig)
from ppl_wsss.model import PPLNet
from wsss.cam.training import default_cam_phase
from wsss.config import ConfigError
from wsss.engine.checkpoint import unwrap
from wsss.models.cam_net import build_backbone


def _check_stages(cfg) -> list[PPLStage]:
    stages = cfg.ppl.stages
    if not stages:
        raise ConfigError("ppl.stages: progressive PPL needs at least one stage")
    return stages


def build_ppl_explicit(cfg) -> PPLNet:
    p = cfg.ppl
    if len(p.grids) != len(p.split_points):
        raise ConfigError(f"ppl.grids: one grid per split point ({len(p.split_points)}), got {len(p.grids)}")
    return PPLNet(build_backbone(cfg), cfg.data.num_classes, cfg.model.detach_stage, p.split_points, p.grids,
                  explicit=True, cam_source=p.cam_source, pad_mode=p.pad_mode,
                  detach_below_split=p.detach_below_split, merge_positions=p.merge_positions)


def progressive_phases(cfg) -> list:
    stages = _check_stages(cfg)
    epochs = [s.epochs if s.epochs >= 0 else cfg.train.epochs for s in stages]
    total = sum(epochs)
    phases, done = [], 0
    for i, (st, ep) in enumerate(zip(stages, epochs)):
        overrides = {"epochs": ep, "lr": st.lr if st.lr >= 0 else cfg.train.lr}
        if not cfg.ppl.restart_schedule and total > 0:
            overrides["poly_span"] = (done / total, (done + ep) / total)
        done += ep
        phase = default_cam_phase(cfg, name=f"stage{i + 1}", **overrides)
        # set_stage also freezes/unfreezes the stages below this split before the phase
        # builds its optimizer, so the param groups hold exactly the blocks it trains
        phase.setup = (lambda idx: lambda model, ctx: unwrap(model).set_stage(idx))(i)
        phase.seed_offset = i
        phases.append(phase)
    return phases


def build_ppl_progressive(cfg) -> PPLNet:
    stages = _check_stages(cfg)
    model = PPLNet(build_backbone(cfg), cfg.data.num_classes, cfg.model.detach_stage, [s.split_after for s in stages],
                   [s.grid for s in stages], explicit=False, cam_source=cfg.ppl.cam_source, pad_mode=cfg.ppl.pad_mode,
                   detach_below_split=cfg.ppl.detach_below_split, merge_positions=cfg.ppl.merge_positions)
    model.set_stage(len(stages) - 1)  # inference uses the last stage's configuration
    return model
