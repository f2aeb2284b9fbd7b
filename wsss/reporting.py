"""Metric files: every number a user quotes is printed and saved as JSON and Markdown,
with the resolved config that produced it."""
from __future__ import annotations

import math
from pathlib import Path

from wsss.config import Config, to_dict
from wsss.fileio import atomic_write_json, atomic_write_text


def fmt(v, digits: int = 2, scale: float = 100.0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v * scale:.{digits}f}"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def per_class_rows(result: dict) -> list[list]:
    return [[name, fmt(result["iou"][name]), fmt(result["precision"][name]), fmt(result["recall"][name])]
            for name in result["iou"]]


def provenance_of(cfg: Config) -> dict:
    """The fingerprint of the stage that is running (wsss.provenance.stamp), for metric files."""
    p = cfg.__dict__.get("_provenance")
    return {"provenance": p} if p else {}


def save_metrics(cfg: Config, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<work_dir>/metrics/<name>.json`` (with the running stage's fingerprint and the
    config) and ``.md``."""
    d = Path(cfg.work_dir) / "metrics"
    j, m = d / f"{name}.json", d / f"{name}.md"
    atomic_write_json(j, {**data, **provenance_of(cfg), "config": to_dict(cfg)})
    atomic_write_text(m, markdown)
    return j, m
