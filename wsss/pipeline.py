"""run_pipeline: every stage of an experiment from one config, resumable, with one summary table.

Each finished stage leaves ``<work_dir>/pipeline/<stage>.json`` (its time, its numbers
and its fingerprint: wsss.provenance). A rerun skips a stage whose fingerprint is what
the config expects; an evaluation whose settings changed runs again; a producing stage
whose outputs were made under another config is refused with the changed keys and the
two ways out (another work_dir, or ``--redo-from STAGE``). A stage that was interrupted
has no marker, so it runs again and resumes by itself (training from last.pth,
make_cam / make_pseudo skip finished files). The summary holds only numbers whose
fingerprint matches the config.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from wsss import provenance
from wsss.config import Config, dump_config
from wsss.engine.distributed import barrier, is_main
from wsss.fileio import atomic_write_json, read_json
from wsss.fingerprint import EVAL_STAGES, StaleOutputError, digest, show
from wsss.pipeline_config import ALL_STAGES
from wsss.registry import summary_extras
from wsss.reporting import md_table, save_metrics
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


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: bool | list[str] = False,
                 redo_from: str | None = None, results: str | None = None) -> dict:
    """Run ``stages`` in order. A stage whose marker holds the fingerprint this config expects
    is skipped. One whose marker is from another config: an evaluation runs again; a
    producing stage runs, and refuses (StaleOutputError) when its outputs were made under
    another config. ``redo_from``: that stage's outputs and every later stage's are removed
    first. ``results``: also publish the summary there with the machine and commit
    (wsss.results)."""
    from wsss.engine.trainer import setup_runtime
    from wsss.workdir import claim

    claim(cfg.work_dir)
    setup_runtime(cfg)  # under torchrun: the process group, so rank 0 removes while the others wait
    stages = stages or list(cfg.pipeline.stages)
    if redo_from:
        if is_main():
            cleared = provenance.clear_from(cfg, redo_from)
            print(f"[pipeline] --redo-from {redo_from}: removed what {', '.join(cleared)} had made", flush=True)
        barrier()
    timings: dict[str, dict] = {}
    for stage in stages:
        marker = marker_path(cfg, stage)
        forced = force is True or (isinstance(force, list) and stage in force)
        if marker.is_file() and not forced:
            done = read_json(marker)
            ok, changes = provenance.consistent(cfg, stage, done.get("fingerprint"))
            if ok:
                if is_main():
                    print(f"[pipeline] {stage}: finished earlier ({done['seconds']:.1f} s), skipped")
                timings[stage] = {**done, "skipped": True}
                continue
            if is_main():
                what = "evaluating again" if stage in EVAL_STAGES else "checking its outputs"
                print(f"[pipeline] {stage}: finished earlier under another config ({_changes(changes)}); {what}")
        if is_main():
            print(f"[pipeline] {stage} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = STAGES[stage](cfg) or {}
        except StaleOutputError as e:
            raise e.for_pipeline() from None
        seconds = time.perf_counter() - t0
        fp = provenance.expected(cfg, stage)
        record = {"stage": stage, "seconds": round(seconds, 2), "numbers": _numbers(stage, result),
                  "fingerprint": fp, "fingerprint_sha256": digest(fp), "config_hash": config_hash(cfg),
                  "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if is_main():
            atomic_write_json(marker, record)
        barrier()
        timings[stage] = {**record, "skipped": False}
    summary = collect_summary(cfg, timings)
    if is_main():
        vis = visualize(cfg) if any(s in stages for s in ("make_cam", "make_pseudo", "eval_cam")) else []
        summary["visualizations"] = vis
        md = summary_markdown(cfg, summary)
        provenance.stamp(cfg, "summary", summary["fingerprints"])
        j, m = save_metrics(cfg, "summary", summary, md)
        print()
        print(md)
        print(f"summary: {j}")
        if results:
            from wsss.results import publish

            print(f"published: {publish(results, 'demo', summary)}")
        if vis:
            print(f"visualisation: {vis[0]}")
    return summary


def _changes(changes: list) -> str:
    text = "; ".join(f"{k}: {show(a)} -> {show(b)}" for k, a, b in changes[:4]) or "no fingerprint recorded"
    return text + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")


def collect_summary(cfg: Config, timings: dict[str, dict]) -> dict:
    """The numbers of every finished stage whose fingerprint is what this config expects,
    read back from their markers; a stage finished under another config is left out (and named)."""
    from wsss.results import provenance_fields

    numbers: dict = {}
    stage_times: dict = {}
    fingerprints: dict = {}
    left_out: dict = {}
    for stage in ALL_STAGES:
        rec = timings.get(stage)
        if rec is None and marker_path(cfg, stage).is_file():
            rec = read_json(marker_path(cfg, stage))
        if rec is None:
            continue
        ok, changes = provenance.consistent(cfg, stage, rec.get("fingerprint"))
        if not ok:
            left_out[stage] = _changes(changes)
            if is_main():
                print(f"[pipeline] {stage}: its numbers are from another config ({left_out[stage]}); left out of the summary")
            continue
        numbers.update(rec.get("numbers", {}))
        stage_times[stage] = rec["seconds"]
        fingerprints[stage] = rec.get("fingerprint_sha256")
    summary = {"experiment": cfg.exp_name, "work_dir": cfg.work_dir, "method": cfg.model.name, "numbers": numbers,
               "seconds": stage_times, "total_seconds": round(sum(stage_times.values()), 2),
               "fingerprints": fingerprints, "left_out": left_out, "config_hash": config_hash(cfg), **provenance_fields()}
    if "train_cam" in fingerprints:  # what a method's training wrote beside the weights (GSLM's rounds)
        summary.update(summary_extras(cfg))
    return summary


def summary_markdown(cfg: Config, s: dict) -> str:
    from wsss.results import summary_rows

    md = f"# {s['experiment']} ({s['method']}, {cfg.model.backbone})\n\n" + md_table(["", "value"], summary_rows(s))
    if s.get("left_out"):
        md += f"\nLeft out, finished under another config (run them again): {', '.join(s['left_out'])}\n"
    return md
