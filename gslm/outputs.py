"""Where GSLM's rounds write, and what the shared layer learns of it through the registry
(light: loading a config or summarising a run imports no model)."""
from __future__ import annotations

from pathlib import Path

from wsss import layout
from wsss.fileio import read_json

ROUNDS_TABLE = "gslm_rounds"  # <work_dir>/metrics/gslm_rounds.{json,md}: one row per round


def round_dir(cfg, r: int) -> Path:
    return layout.method_dir(cfg, "gslm") / f"round{r}"


def last_round_cams(cfg) -> list[Path]:
    """The last round's CAMs were made from the final weights: make_cam links them when
    their made_by.json matches (same weights and inference settings)."""
    rounds = rounds_of(cfg)
    return [round_dir(cfg, rounds) / "cams"] if rounds > 0 else []


def rounds_of(cfg) -> int:
    """The SLM rounds a config runs (0 without a gslm section: the method is not used)."""
    g = getattr(cfg, "gslm", None)
    return g.rounds if g is not None else 0


def rounds_summary(cfg) -> dict:
    """run_pipeline's summary entry: the per-round table train_cam wrote (none without rounds)."""
    f = layout.metrics_dir(cfg) / f"{ROUNDS_TABLE}.json"
    return {"gslm_rounds": read_json(f).get("rounds")} if f.is_file() else {}
