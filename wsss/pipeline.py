"""run_pipeline: every stage of an experiment from one config, resumable, with one summary table.

Each finished stage leaves a marker ``<work_dir>/pipeline/<stage>.json`` (its time, its
numbers and its record: wsss.records). A rerun skips a stage whose marker holds the
record the config expects; an evaluation whose settings changed runs again; a producing
stage whose outputs were made under another config is refused with the changed keys and
the two ways out (another work_dir, or ``--redo-from STAGE``). A stage that was
interrupted has no marker, so it runs again and resumes by itself (training from
last.pth, make_cam / make_pseudo skip finished files). The summary holds only numbers
whose record matches the config.
"""
from __future__ import annotations

import hashlib
import time

from wsss import layout, records
from wsss.config import Config, ConfigError, dump_config
from wsss.engine.distributed import barrier, is_main
from wsss.fileio import atomic_write_json, read_json
from wsss.registry import summary_extras
from wsss.reports import md_table, recording, run_info, save_metrics, summary_rows
from wsss.stages import STAGES, check_batches, run, visualize


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]


def parse_stages(text: str | None, cfg: Config) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()] if text else (list(cfg.pipeline.stages) or list(STAGES))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    return stages


def clear_from(cfg: Config, stage: str) -> list[str]:
    """Remove the outputs and markers of ``stage`` and of every stage after it (and the summary)."""
    names = list(STAGES)
    later = names[names.index(stage):]
    for s in later:
        layout.marker(cfg, s).unlink(missing_ok=True)  # first: no marker claims a half-removed output
    layout.discard_metrics(cfg, ["summary.*"])
    layout.discard_dir(cfg, layout.vis_dir(cfg))
    for s in later:
        layout.clear(cfg, STAGES[s].outputs)
    return later


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: bool | list[str] = False,
                 redo_from: str | None = None) -> dict:
    """Run ``stages`` in order. A stage whose marker holds the record this config expects is
    skipped. One whose marker is from another config: an evaluation runs again; a producing
    stage runs, and refuses (StaleOutputError) when its outputs were made under another
    config. ``redo_from``: that stage's outputs and every later stage's are removed first."""
    from wsss.engine.trainer import setup_runtime
    from wsss.lock import claim

    claim(cfg.work_dir)
    setup_runtime(cfg)  # under torchrun: the process group, so rank 0 removes while the others wait
    stages = stages or parse_stages(None, cfg)
    check_batches(cfg, stages)  # not an hour in, at train_seg
    if redo_from:
        if is_main():
            cleared = clear_from(cfg, redo_from)
            print(f"[pipeline] --redo-from {redo_from}: removed what {', '.join(cleared)} had made", flush=True)
        barrier()
    timings: dict[str, dict] = {}
    for name in stages:
        stage, marker = STAGES[name], layout.marker(cfg, name)
        forced = force is True or (isinstance(force, list) and name in force)
        if marker.is_file() and not forced:
            done = read_json(marker)
            ok, changes = records.consistent(cfg, stage, done.get("record"))
            if ok:
                if is_main():
                    print(f"[pipeline] {name}: finished earlier ({done['seconds']:.1f} s), skipped")
                timings[name] = {**done, "skipped": True}
                continue
            if is_main():
                what = "evaluating again" if stage.evaluation else "checking its outputs"
                print(f"[pipeline] {name}: finished earlier under another config ({_changes(changes)}); {what}")
        if is_main():
            print(f"[pipeline] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = run(cfg, name)
        except records.StaleOutputError as e:
            raise e.for_pipeline() from None
        seconds = time.perf_counter() - t0
        record = records.expected(cfg, stage)
        done = {"stage": name, "seconds": round(seconds, 2), "numbers": stage.numbers(result) if result else {},
                "record": record, "record_sha256": records.digest(record), "config_hash": config_hash(cfg),
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if is_main():
            atomic_write_json(marker, done)
        barrier()
        timings[name] = {**done, "skipped": False}
    summary = collect_summary(cfg, timings)
    if is_main():
        vis = visualize(cfg) if any(s in stages for s in ("make_cam", "make_pseudo", "eval_cam")) else []
        summary["visualizations"] = vis
        md = summary_markdown(cfg, summary)
        with recording({"stage": "summary", "inputs": summary["records"]}):
            j, _ = save_metrics(cfg, "summary", summary, md)
        print()
        print(md)
        print(f"summary: {j}")
        if vis:
            print(f"visualisation: {vis[0]}")
    return summary


def _changes(changes: list) -> str:
    text = "; ".join(f"{k}: {records.show(a)} -> {records.show(b)}" for k, a, b in changes[:4]) or "no record"
    return text + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")


def collect_summary(cfg: Config, timings: dict[str, dict]) -> dict:
    """The numbers of every finished stage whose record is what this config expects, read
    back from their markers; a stage finished under another config is left out (and named)."""
    numbers: dict = {}
    stage_times: dict = {}
    done_records: dict = {}
    left_out: dict = {}
    for name, stage in STAGES.items():
        rec = timings.get(name)
        if rec is None and layout.marker(cfg, name).is_file():
            rec = read_json(layout.marker(cfg, name))
        if rec is None:
            continue
        ok, changes = records.consistent(cfg, stage, rec.get("record"))
        if not ok:
            left_out[name] = _changes(changes)
            if is_main():
                print(f"[pipeline] {name}: its numbers are from another config ({left_out[name]}); left out of the summary")
            continue
        numbers.update(rec.get("numbers", {}))
        stage_times[name] = rec["seconds"]
        done_records[name] = rec.get("record_sha256")
    summary = {"experiment": cfg.exp_name, "work_dir": cfg.work_dir, "method": cfg.model.name, "numbers": numbers,
               "seconds": stage_times, "total_seconds": round(sum(stage_times.values()), 2),
               "records": done_records, "left_out": left_out, "config_hash": config_hash(cfg), **run_info()}
    if "train_cam" in done_records:  # what a method's training wrote beside the weights (GSLM's rounds)
        summary.update(summary_extras(cfg))
    return summary


def summary_markdown(cfg: Config, s: dict) -> str:
    md = f"# {s['experiment']} ({s['method']}, {cfg.model.backbone})\n\n" + md_table(["", "value"], summary_rows(s))
    if s.get("left_out"):
        md += f"\nLeft out, finished under another config (run them again): {', '.join(s['left_out'])}\n"
    return md
