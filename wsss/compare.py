"""compare_methods: run several experiments' full pipelines on the same data and put
their numbers side by side (scripts/compare_methods.py)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from wsss.fileio import atomic_write_json, atomic_write_text, read_json
from wsss.reporting import fmt, md_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = {
    "baseline CAM": "configs/cam/cam_r18_synthetic.yaml",
    "PPL progressive": "configs/ppl/ppl_progressive_r18_synthetic.yaml",
    "PPL explicit": "configs/ppl/ppl_explicit_r18_synthetic.yaml",
    "GSLM": "configs/gslm/gslm_r18_synthetic.yaml",
}


def run_comparison(methods: dict[str, str], out: Path, overrides: list[str], stages: str | None = None) -> dict:
    rows = []
    for name, config in methods.items():
        work = out / Path(config).stem
        cmd = [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "--config", str(REPO / config),
               f"work_dir={work}", *overrides]
        if stages:
            cmd += ["--stages", stages]
        print(f"[compare] {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"{name}: run_pipeline failed with exit code {proc.returncode} (see its output above)")
        s = read_json(work / "metrics" / "summary.json")
        n, secs = s["numbers"], s["seconds"]
        rows.append({"method": name, "config": config, "work_dir": str(work), **n,
                     "train_cam_seconds": secs.get("train_cam"), "pipeline_seconds": round(time.perf_counter() - t0, 1)})
    header = ["method", "CAM mIoU (best thr.)", "CAM+CRF mIoU", "pseudo-mask mIoU (255=bg)", "pseudo-mask mIoU (confident)",
              "seg mIoU (val)", "train_cam time"]
    table = [[r["method"], fmt(r.get("cam_miou")) + (f" @ {r['cam_best_threshold']:.2f}" if "cam_best_threshold" in r else ""),
              fmt(r.get("cam_crf_miou")) + (f" @ {r['cam_crf_threshold']:.2f}" if "cam_crf_threshold" in r else ""),
              fmt(r.get("pseudo_miou_255_as_bg")), fmt(r.get("pseudo_miou_confident")), fmt(r.get("seg_miou")),
              f"{r['train_cam_seconds']:.0f} s" if r.get("train_cam_seconds") else "-"] for r in rows]
    md = md_table(header, table)
    atomic_write_json(out / "comparison.json", {"rows": rows, "overrides": overrides})
    atomic_write_text(out / "comparison.md", md)
    print(md)
    print(f"saved {out / 'comparison.json'}")
    return {"rows": rows}
