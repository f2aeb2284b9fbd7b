"""The files a run writes for people: every number a user quotes is printed and saved under
``<work_dir>/metrics`` as JSON and Markdown, with the resolved config and the record of the
stage that made it (wsss.records), and the summary with the machine and commit it ran on.

(Numbers themselves: wsss.metrics. Tables published in the docs: tools/published.py.)
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from wsss import layout
from wsss.config import Config, to_dict
from wsss.fileio import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]

# the record of the stage that is running: every metrics file written meanwhile carries it
_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("wsss_stage_record", default=None)


@contextlib.contextmanager
def recording(record: dict) -> Iterator[None]:
    """Metrics files written inside this block carry ``record`` (the running stage's)."""
    token = _RECORD.set(record)
    try:
        yield
    finally:
        _RECORD.reset(token)


def current_record() -> dict:
    """``{"record": ...}`` of the running stage, for a metrics file ({} outside a stage)."""
    r = _RECORD.get()
    return {"record": r} if r is not None else {}


def pct(v: float | None, digits: int = 2) -> str:
    """A fraction as a percentage ('-' for none)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.{digits}f}"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def per_class_rows(result: dict) -> list[list]:
    return [[name, pct(result["iou"][name]), pct(result["precision"][name]), pct(result["recall"][name])]
            for name in result["iou"]]


def save_json(cfg: Config, path: Path, data: dict) -> Path:
    """A metrics JSON: the data, the running stage's record and the config."""
    atomic_write_json(path, {**data, **current_record(), "config": to_dict(cfg)})
    return path


def save_metrics(cfg: Config, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<work_dir>/metrics/<name>.json`` (with the running stage's record and the config) and ``.md``."""
    d = layout.metrics_dir(cfg)
    j, m = d / f"{name}.json", d / f"{name}.md"
    save_json(cfg, j, data)
    atomic_write_text(m, markdown)
    return j, m


# --------------------------------------------------------------------------
# what a result was made on, and from which code
# --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
                            "cores": os.cpu_count(), "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    torch = sys.modules.get("torch")
    if torch is not None:  # only when the command used it: importing it here would cost every caller
        info.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    return info


def git_commit(repo: Path = REPO) -> dict:
    """{"sha", "dirty"} of the checkout the code runs from (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha.strip() if sha else None, "dirty": bool(status.strip()) if status is not None else None}


def run_info() -> dict:
    """The machine, the commit and the time a summary or a published result was made."""
    return {"made_on": machine_info(), "commit": git_commit(), "made_at": time.strftime("%Y-%m-%d %H:%M:%S")}


# --------------------------------------------------------------------------
# the pipeline's summary table
# --------------------------------------------------------------------------
def summary_rows(s: dict, skip_missing: bool = False) -> list[list[str]]:
    """The summary table's rows (run_pipeline prints it; the README quotes the demo's)."""
    n = s["numbers"]
    rows = [
        ["CAM mIoU (best threshold)", pct(n.get("cam_miou")) + (f" @ {n['cam_best_threshold']:.2f}" if "cam_best_threshold" in n else ""), "cam_miou"],
        ["CAM+CRF mIoU (label CRF)", pct(n.get("cam_crf_miou")) + (f" @ {n['cam_crf_threshold']:.2f}" if "cam_crf_threshold" in n else ""), "cam_crf_miou"],
        ["pseudo-mask mIoU (255 as background)", pct(n.get("pseudo_miou_255_as_bg")), "pseudo_miou_255_as_bg"],
        ["pseudo-mask mIoU (confident pixels)", pct(n.get("pseudo_miou_confident"))
         + (f" ({pct(n['pseudo_confident_fraction'])}% confident)" if "pseudo_confident_fraction" in n else ""), "pseudo_miou_confident"],
        ["IRN label mIoU (random walk)", pct(n.get("irn_miou")), "irn_miou"],
        ["segmentation mIoU (val)", pct(n.get("seg_miou")), "seg_miou"],
    ]
    rows = [[a, b] for a, b, key in rows if not (skip_missing and n.get(key) is None)]
    rows += [[f"time: {st}", f"{sec:.1f} s"] for st, sec in s["seconds"].items()]
    rows.append(["time: total", f"{s['total_seconds']:.1f} s"])
    return rows
