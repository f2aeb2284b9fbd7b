"""run_pipeline: every stage of an experiment from one config, resumable, with one summary table.

Each finished stage leaves ``<work_dir>/pipeline/<stage>.json`` (its time, its
numbers and a hash of the config); a rerun skips those stages unless forced. A
stage that was interrupted has no marker, so it runs again and resumes by
itself (training from last.pth, make_cam / make_pseudo skip finished files).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from wsss.config import Config, dump_config
from wsss.engine.distributed import barrier, is_main
from wsss.fileio import atomic_write_json, read_json
from wsss.pipeline_config import ALL_STAGES
from wsss.reporting import fmt, md_table, save_metrics
from wsss.stages import STAGES, visualize


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]


def marker_path(cfg: Config, stage: str) -> Path:
    return Path(cfg.work_dir) / "pipeline" / f"{stage}.json"


def parse_stages(text: str | None, cfg: Config) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()] if text else list(cfg.pipeline.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from wsss.config import ConfigError

        raise ConfigError(f"unknown stage(s) {unknown}; stages are {', '.join(ALL_STAGES)}")
    return stages


def _numbers(stage: str, result: dict) -> dict:
    """The figures of a stage's result that the summary quotes."""
    if stage == "eval_cam" and result:
        out = {"cam_miou": result["miou"], "cam_best_threshold": result["best_threshold"]}
        if result.get("crf"):
            out.update({"cam_crf_miou": result["crf"]["miou"], "cam_crf_threshold": result["crf"]["threshold"]})
        return out
    if stage == "eval_pseudo" and result:
        return {"pseudo_miou_255_as_bg": result["miou_255_as_background"],
                "pseudo_miou_confident": result["miou_confident_pixels"],
                "pseudo_confident_fraction": result["confident_fraction"]}
    if stage == "eval_seg" and result:
        return {"seg_miou": result.get("miou")}
    return {}


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: bool | list[str] = False) -> dict:
    stages = stages or list(cfg.pipeline.stages)
    digest = config_hash(cfg)
    timings: dict[str, dict] = {}
    for stage in stages:
        marker = marker_path(cfg, stage)
        forced = force is True or (isinstance(force, list) and stage in force)
        if marker.is_file() and not forced:
            done = read_json(marker)
            if done.get("config_hash") != digest and is_main():
                print(f"[pipeline] note: the config changed since {stage} finished; --force {stage} to redo it")
            if is_main():
                print(f"[pipeline] {stage}: finished earlier ({done['seconds']:.1f} s), skipped")
            timings[stage] = {**done, "skipped": True}
            continue
        if is_main():
            print(f"[pipeline] {stage} ...", flush=True)
        t0 = time.perf_counter()
        result = STAGES[stage](cfg) or {}
        seconds = time.perf_counter() - t0
        record = {"stage": stage, "seconds": round(seconds, 2), "numbers": _numbers(stage, result),
                  "config_hash": digest, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if is_main():
            atomic_write_json(marker, record)
        barrier()
        timings[stage] = {**record, "skipped": False}
    summary = collect_summary(cfg, timings)
    if is_main():
        vis = visualize(cfg) if any(s in stages for s in ("make_cam", "make_pseudo", "eval_cam")) else []
        summary["visualizations"] = vis
        md = summary_markdown(cfg, summary)
        j, m = save_metrics(cfg, "summary", summary, md)
        print()
        print(md)
        print(f"summary: {j}")
        if vis:
            print(f"visualisation: {vis[0]}")
    return summary


def collect_summary(cfg: Config, timings: dict[str, dict]) -> dict:
    """The numbers of every finished stage, read back from their markers and metric files."""
    numbers: dict = {}
    stage_times: dict = {}
    for stage in ALL_STAGES:
        rec = timings.get(stage)
        if rec is None and marker_path(cfg, stage).is_file():
            rec = read_json(marker_path(cfg, stage))
        if rec is None:
            continue
        numbers.update(rec.get("numbers", {}))
        stage_times[stage] = rec["seconds"]
    extra = Path(cfg.work_dir) / "metrics" / "gslm_rounds.json"
    summary = {"experiment": cfg.exp_name, "work_dir": cfg.work_dir, "method": cfg.model.name, "numbers": numbers,
               "seconds": stage_times, "total_seconds": round(sum(stage_times.values()), 2)}
    if extra.is_file():
        summary["gslm_rounds"] = json.loads(extra.read_text()).get("rounds")
    return summary


def summary_markdown(cfg: Config, s: dict) -> str:
    n = s["numbers"]
    rows = [
        ["CAM mIoU (best threshold)", fmt(n.get("cam_miou")) + (f" @ {n['cam_best_threshold']:.2f}" if "cam_best_threshold" in n else "")],
        ["CAM+CRF mIoU (label CRF)", fmt(n.get("cam_crf_miou")) + (f" @ {n['cam_crf_threshold']:.2f}" if "cam_crf_threshold" in n else "")],
        ["pseudo-mask mIoU (255 as background)", fmt(n.get("pseudo_miou_255_as_bg"))],
        ["pseudo-mask mIoU (confident pixels)", fmt(n.get("pseudo_miou_confident"))
         + (f" ({fmt(n['pseudo_confident_fraction'])}% confident)" if "pseudo_confident_fraction" in n else "")],
        ["segmentation mIoU (val)", fmt(n.get("seg_miou"))],
    ]
    rows += [[f"time: {st}", f"{sec:.1f} s"] for st, sec in s["seconds"].items()]
    rows.append(["time: total", f"{s['total_seconds']:.1f} s"])
    return f"# {s['experiment']} ({s['method']}, {cfg.model.backbone})\n\n" + md_table(["", "value"], rows)
