"""Published results: the numbers the README and docs/*.md quote, each from one command that writes it.

    python scripts/run_pipeline.py --config configs/demo/demo_synthetic.yaml --results docs/results/demo.json
    python scripts/compare_methods.py --results docs/results/compare.json
    python scripts/benchmark.py --results docs/results/benchmark.json
    python scripts/render_results.py          # rewrites the docs' marked sections from them

A published file holds the command, the machine (platform, CPU model, cores, torch and
its thread count, GPU), the git commit with a dirty flag, and the data. The sections
between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in README.md and
docs/*.md (:func:`documents`) are rendered from these files only (:func:`render`);
``tests/test_results_docs.py`` fails when a quoted number differs from its file.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from wsss.fileio import atomic_write_json, read_json
from wsss.reports import REPO, md_table, pct, run_info, summary_rows
RESULTS_DIR = REPO / "docs" / "results"
SECTIONS = {"demo": ["demo", "compare"], "compare": ["compare"], "gslm_rounds": ["compare"], "benchmark": ["benchmark"]}


def publish(path: str | os.PathLike, kind: str, data: dict, made_on: dict | None = None) -> Path:
    """Write a published result: the command that made it, the machine, the commit, the data.
    ``made_on``: the machine as the processes that measured saw it (their torch and threads)."""
    doc = {"kind": kind, "command": shlex.join(["python", *[_relative(a) for a in sys.argv]]), **run_info(),
           "data": data}
    if made_on:
        doc["made_on"] = made_on
    atomic_write_json(path, doc)
    return Path(path)


def _relative(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(REPO)) if os.sep in arg and Path(arg).exists() else arg
    except ValueError:
        return arg


# --------------------------------------------------------------------------
# the marked sections of README.md and docs/*.md, from published results only
# --------------------------------------------------------------------------
def made_on(doc: dict) -> str:
    """One line: machine, torch, threads, commit, date (and a placeholder's origin)."""
    m = doc.get("made_on", {})
    parts = [f"{m.get('usable_cores') or m.get('cores')}-core {m.get('machine', '?')} CPU" + (f" ({m['cpu']})" if m.get("cpu") else "")]
    if m.get("gpu"):
        parts.append(m["gpu"])
    if m.get("torch"):
        parts.append(f"torch {m['torch']}" + (f", {m['torch_threads']} thread{'s' * (m['torch_threads'] != 1)}" if m.get("torch_threads") else ""))
    c = doc.get("commit", {})
    sha = (c.get("sha") or "unknown")[:7]
    parts.append(f"commit {sha}{' with local changes' if c.get('dirty') else ''}")
    if doc.get("made_at"):
        parts.append(doc["made_at"][:10])
    return "; ".join(parts)


def placeholder(doc: dict) -> str:
    """A note under the caption when the numbers were not made by the command, or were made
    under conditions a reader must know (``note``: e.g. other jobs sharing the cores)."""
    out = f"\n> **Placeholder**: {doc['placeholder']}.\n" if doc.get("placeholder") else ""
    return out + (f"\n> **Note**: {doc['note']}.\n" if doc.get("note") else "")


def _untrained(compare: dict | None) -> dict | None:
    controls = (compare or {}).get("data", {}).get("controls", [])
    return next((c for c in controls if c.get("name") == UNTRAINED), None)


UNTRAINED = "untrained network"


def render_demo(demo: dict, compare: dict | None) -> str:
    s = demo["data"]
    out = (f"The demo's summary ({s['method']}; CAMs and pseudo masks scored on the synthetic `train` split, DeepLab on "
           f"its `val` split), as `{demo['command']}` wrote it ({made_on(demo)}):\n" + placeholder(demo) + "\n"
           + md_table(["", "value"], summary_rows(s, skip_missing=True)))
    u = _untrained(compare)
    if u is not None and u.get("cam_miou") is not None:
        out += (f"\nAn untrained network of the baseline's architecture gives a CAM mIoU of {pct(u['cam_miou'])} (at threshold "
                f"{u['cam_best_threshold']:.2f}) on the same split (`docs/results/compare.json`). These are numbers on "
                "synthetic data that show the code works end to end; they say nothing about VOC.\n")
    return out


def render_compare(doc: dict) -> str:
    d = doc["data"]
    if d.get("pipeline_seconds"):
        took = f"; its runs took {int(d['pipeline_seconds'] // 60)} min in all"
    else:
        took = f"; {int(d['wall_seconds'] // 60)} min in all" if (d.get("wall_seconds") or 0) >= 60 else ""
    out = d.get("out", "work_dirs/compare")
    return (f"Measured with `{doc['command']}` ({made_on(doc)}{took}), which also writes "
            f"`{out}/bench.{{json,md}}`:\n" + placeholder(doc) + "\n" + render_bench(d).replace("## ", "#### "))


def render_gslm_rounds(doc: dict) -> str:
    runs = doc["data"].get("runs", {}).get("GSLM") or [{}]
    rounds = runs[0].get("gslm_rounds") or []
    crf = any(r.get("cam_crf_miou_at_report") is not None for r in rounds)
    header = ["model", "CAM mIoU @ round thr."] + (["CAM+CRF mIoU @ round thr."] if crf else []) + [
        "round thr.", "CAM mIoU @ best", "best thr.", "pseudo mIoU (255=bg)", "pseudo mIoU (confident)"]
    table = [[r["name"], pct(r.get("cam_miou_at_report"))] + ([pct(r.get("cam_crf_miou_at_report"))] if crf else [])
             + [f"{r['report_threshold']:.2f}", pct(r.get("cam_miou_best")), f"{r['best_threshold']:.2f}",
                pct(r.get("pseudo_miou_255_as_bg")), pct(r.get("pseudo_miou_confident"))] for r in rounds]
    return (f"From the bench's GSLM run with training seed {runs[0].get('seed', 0)} (`metrics/gslm_rounds.md`; "
            f"{made_on(doc)}):\n" + placeholder(doc) + "\n" + md_table(header, table))


BASELINE = "baseline CAM"  # the bench's reference arm (tools/compare.py's name for it)


def _premise_line(d: dict) -> str:
    """The premise in one sentence: on the bench's data seed, and on the held-out one apart."""
    def flooding(r: dict) -> str:
        classes = r["premise"]["checks"]["no_flooding"]["value"]
        return f" ({', '.join(classes)} flood)" if classes else ""

    runs = [r for r in d["runs"].get(BASELINE, []) if r.get("premise")]
    out = (f"Premise: met in {sum(r['premise']['ok'] for r in runs)} of {len(runs)} baseline runs on data seed {d['data_seed']}"
           + "".join(flooding(r) for r in runs if not r["premise"]["ok"]))
    held = (d.get("heldout") or {}).get(BASELINE)
    if held and held.get("premise"):
        out += f"; on the held-out data seed {d['heldout_data_seed']}: {'met' if held['premise']['ok'] else 'not met'}{flooding(held)}"
    return out + "."


def render_bench_headline(doc: dict) -> str:
    """The README's short form of a bench: each arm's mean ± std and verdict, the premise, the
    ground-truth-target control (the full tables are in docs/synthetic_bench.md)."""
    d = doc["data"]
    rows = [[arm, a["cam_miou"]["n"], pm(a["cam_miou"]), _diff(a["cam_miou"]), a["cam_miou"].get("effect", "-"),
             pm(a["pseudo_miou_255_as_bg"]), _diff(a["pseudo_miou_255_as_bg"]), pm(a["body"])]
            for arm, a in d["aggregate"].items()]
    checks = d.get("control_checks") or {}
    out = (f"The bench on `{d.get('bench_file') or 'its scene'}` (training seeds {', '.join(map(str, d['seeds']))}; "
           f"{made_on(doc)}; `docs/results/{doc['kind']}.json`):\n" + placeholder(doc) + "\n"
           + md_table(["arm", "seeds", "CAM mIoU", "vs baseline", "verdict (> 2 std)", "pseudo-mask mIoU", "vs baseline",
                     "bodies covered"], rows)
           + "\n" + _premise_line(d))
    if checks.get("gt_targets_gain_over_glm") is not None:
        out += (f" Control: GSLM with ground-truth SR targets {_check(checks['gt_targets_gain_over_glm'])} of CAM mIoU "
                f"over its GLM (>= 5: {_check(checks.get('gt_targets_raise_cam_miou_by_5'))}).")
    if d.get("not_run"):
        out += f" Not run: {', '.join(d['not_run'])}."
    return out + "\n"


BENCH_NAMES = {"cam_net": "baseline CAM", "ppl_progressive": "PPL progressive", "ppl_explicit": "PPL explicit", "gslm_slm": "GSLM SLM"}


def render_benchmark(doc: dict) -> str:
    r = doc["data"]
    st = r.get("settings", {})
    plain = [t for t in r["train"] if t.get("amp", "none") == "none" and not t.get("channels_last")]
    mc, ev, mp = r["make_cam"], r["eval_cam"], r["make_pseudo"]
    b, s1, s2 = mp["runs"]

    def status(ok: bool) -> str:
        return "met" if ok else "**short**"

    flat = mc["peak_rss_mib_2x_images"] <= 1.1 * mc["peak_rss_mib"]
    rows = [
        ["train_cam efficiency (engine / raw fwd+bwd on in-memory tensors): " + ", ".join(BENCH_NAMES.get(t["method"], t["method"]) for t in plain),
         ", ".join(f"{t['training_efficiency']:.2f} ({t['engine_images_per_s']:.1f}" + (" img/s)" if i == 0 else ")") for i, t in enumerate(plain)),
         ">= 0.9", status(all(t["training_efficiency"] >= 0.9 for t in plain))],
        [f"make_cam efficiency ({len(mc.get('scales', [])) or 'all'} scales + flip, files written, steady state / raw forward)",
         f"{mc['inference_efficiency']:.2f} ({mc['make_cam_steady_images_per_s']:.2f} vs {mc['raw_images_per_s']:.2f} img/s); "
         f"{mc['inference_efficiency_end_to_end']:.2f} end to end with start-up", ">= 0.9",
         "met" if mc["inference_efficiency_end_to_end"] >= 0.9 else ("met in steady state" if mc["inference_efficiency"] >= 0.9 else "**short**")],
        [f"make_cam peak RSS, {mc['images']} / {2 * mc['images']} images", f"{mc['peak_rss_mib']:.0f} / {mc['peak_rss_mib_2x_images']:.0f} MiB",
         "flat", status(flat)],
        [f"eval_cam sweep of {ev['thresholds']} thresholds / 1 threshold",
         f"{ev['sweep_s']:.2f} s / {ev['single_threshold_s']:.2f} s = {ev['sweep_over_single']:.2f}x; results equal to "
         f"{ev['thresholds']} separate evaluations (tested)", "<= 2x", status(ev["sweep_over_single"] <= 2)],
        ["make_pseudo, pairwise terms built once per image / two independent CRFs (identical masks, tested)",
         f"{s1['images_per_s']:.1f} / {b['images_per_s']:.1f} img/s = **{mp['shared_over_two_crf']:.2f}x**", ">= 1.5x",
         status(mp["shared_over_two_crf"] >= 1.5)],
        ["make_pseudo, 2 workers / 1 worker", f"{s2['images_per_s']:.1f} / {s1['images_per_s']:.1f} img/s (shared pairwise) = "
         f"{mp['two_workers_over_one']:.2f}x", ">= 1.8x", status(mp["two_workers_over_one"] >= 1.8)],
    ]
    wall = r.get("wall_seconds")
    took = f"; {int(wall // 60)} min {int(wall % 60)} s in all" if wall else ""
    out = (f"`{doc['command']}` ({st.get('backbone', '?')}, {st.get('image_size', '?')} px, batch {st.get('batch', '?')}, "
           f"{st.get('workers', '?')} loader workers, {st.get('images', '?')} images{took}; {made_on(doc)}), which also writes "
           "`work_dirs/benchmark/benchmark.{json,md}`:\n" + placeholder(doc) + "\n" + md_table(["what", "measured", "target", ""], rows))
    return out


RENDERERS = {
    "demo": lambda d: render_demo(d["demo"], d.get("compare")),
    "compare": lambda d: render_compare(d["compare"]),
    "compare_elongated": lambda d: render_compare(d["compare_elongated"]),
    "compare_decoys": lambda d: render_compare(d["compare_decoys"]),
    "bench_headline": lambda d: render_bench_headline(d["compare_decoys"]),
    "gslm_rounds_decoys": lambda d: render_gslm_rounds(d["compare_decoys"]),
    "gslm_rounds": lambda d: render_gslm_rounds(d["compare"]),
    "benchmark": lambda d: render_benchmark(d["benchmark"]),
    "benchmark_reference": lambda d: render_benchmark_reference(d["benchmark_reference"]),
    "crf_agreement": lambda d: render_crf_agreement(d["crf_agreement"]),
    "crf_throughput": lambda d: render_crf_throughput(d["crf_throughput"]),
    "irn_synthetic": lambda d: render_irn_synthetic(d["irn_synthetic"]),
    "irn_benchmark": lambda d: render_irn_benchmark(d["irn_benchmark"]),
    "node_estimate": lambda d: render_node_estimate(d["node_estimate"]),
}


def load_published(results_dir: Path = RESULTS_DIR) -> dict:
    return {p.stem: read_json(p) for p in sorted(results_dir.glob("*.json"))}


def render(name: str, docs: dict) -> str:
    return RENDERERS[name](docs)


MARKER = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def documents(repo: Path = REPO) -> list[Path]:
    """The files that may quote published results: the README and the pages under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def marked_sections(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in MARKER.finditer(text)}


def rewrite(text: str, docs: dict) -> str:
    """``text`` with every marked section rendered from ``docs``."""
    def sub(m: re.Match) -> str:
        return m.group(1) + render(m.group(2), docs) + m.group(4)

    return MARKER.sub(sub, text)


# --------------------------------------------------------------------------
# the synthetic bench's tables (scripts/compare_methods.py)
# --------------------------------------------------------------------------
def pm(v: dict, scale: float = 100.0) -> str:
    if v.get("mean") is None:
        return "-"
    return f"{scale * v['mean']:.2f} ± {scale * v['std']:.2f}"


def render_bench(d: dict) -> str:
    agg = d["aggregate"]
    rows = []
    for arm, a in agg.items():
        rows.append([f"{arm} (n={a['cam_miou']['n']})"] + [pm(a[m]) for m in ("cam_miou", "cam_crf_miou", "pseudo_miou_255_as_bg", "part", "body",
                                                  "background_fp")]
                    + [_diff(a["cam_miou"]), a["cam_miou"].get("effect", "-")])
    md = (f"## Arms: training seeds {', '.join(map(str, d['seeds']))} on data seed {d['data_seed']} (mean ± std over the n seeds run)\n\n"
          + md_table(["arm", "CAM mIoU", "CAM+CRF mIoU", "pseudo-mask mIoU", "part covered", "body covered",
                      "background FP", "CAM mIoU vs baseline", "verdict (> 2 std of baseline)"], rows))
    glm_of, arm_set = d.get("glm_of") or {}, d.get("arm_overrides") or {}
    notes = [f"{arm} starts its rounds from the {glm} run of the same seed and data (its GLM: the same network, "
             "`train.init_checkpoint`)" for arm, glm in glm_of.items()]
    notes += [f"{arm}'s runs and controls add `{' '.join(over)}`" for arm, over in arm_set.items()]
    if d.get("bench_file"):
        notes.insert(0, f"the scene: `{d['bench_file']}`; every run adds its overrides `{' '.join(d.get('overrides') or []) or '(none)'}`")
    if notes:
        md += "\n" + "".join(f"* {n}.\n" for n in notes)
    h = d["heldout"]
    if h:
        base = h.get(BASELINE, {}).get("cam_miou")
        md += (f"\n## Held-out data seed {d['heldout_data_seed']} (one training seed, no config tuned on it)\n\n"
               + md_table(["arm", "CAM mIoU", "CAM+CRF mIoU", "pseudo-mask mIoU", "part covered", "body covered",
                           "CAM mIoU vs baseline"],
                          [[arm, pct(r.get("cam_miou")), pct(r.get("cam_crf_miou")), pct(r.get("pseudo_miou_255_as_bg")),
                            pct(r.get("part")), pct(r.get("body")),
                            "-" if arm == BASELINE or base is None or r.get("cam_miou") is None else f"{100 * (r['cam_miou'] - base):+.2f}"]
                           for arm, r in h.items()]))
    if d["controls"]:
        md += "\n## Controls (training seed " + str(d["seeds"][0]) + ")\n\n" + md_table(
            ["control", "CAM mIoU", "CAM+CRF mIoU", "pseudo-mask mIoU", "body covered", "what it shows"],
            [[c["name"], pct(c.get("cam_miou")), pct(c.get("cam_crf_miou")), pct(c.get("pseudo_miou_255_as_bg")),
              pct(c.get("body")), c["expect"]] for c in d["controls"]])
        if d["control_checks"]:
            md += "\n" + "\n".join(f"* {k}: {_check(v)}" for k, v in d["control_checks"].items()) + "\n"
    if d.get("not_run"):
        md += ("\n**Not run** (the bench stopped before them; `scripts/compare_methods.py` resumes and adds them): "
               + ", ".join(d["not_run"]) + ".\n")
    p = d["premise"]
    md += (f"\n## Premise (baseline runs)\n\n{'met' if p['ok'] else '**not met**'}: it holds in {p['runs'] - len(p['failed'])} of "
           f"{p['runs']} baseline runs (parts >= 90% covered, bodies <= 60%, every class's precision above its recall, "
           "pseudo-mask precision >= 80%)\n")
    base_runs = [(r["seed"], r) for r in d["runs"].get(BASELINE, [])]
    held = d["heldout"].get(BASELINE)
    if held and held.get("premise"):
        base_runs.append((f"{held['seed']}, held-out data seed {d['heldout_data_seed']}", held))
    if base_runs and base_runs[0][1].get("premise"):
        md += "\n" + md_table(["seed", "parts covered", "bodies covered", "flooding classes", "pseudo precision", "ok"],
                              [[seed, pct(r["premise"]["checks"]["parts_covered"]["value"]),
                                pct(r["premise"]["checks"]["bodies_not_covered"]["value"]),
                                ", ".join(r["premise"]["checks"]["no_flooding"]["value"]) or "none",
                                pct(r["premise"]["checks"].get("pseudo_precision", {}).get("value")),
                                "yes" if r["premise"]["ok"] else "**no**"] for seed, r in base_runs])
    return md


def _diff(v: dict) -> str:
    return "-" if v.get("diff") is None else f"{100 * v['diff']:+.2f}"


def _check(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return f"{100 * v:+.2f} points"


# --------------------------------------------------------------------------
# our stages against the reference procedure (scripts/benchmark_reference.py)
# --------------------------------------------------------------------------
REFERENCE_TARGETS = {"make_cam": 1.9, "train_cam": 1.4, "make_pseudo": 1.5}


def _ratio_cell(r: dict) -> str:
    return f"**{r['ratio']:.2f}** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"


def _cpu_cell(r: dict) -> str:
    return f"{r['cpu_ratio']:.2f} ({r['cpu_ratio_min']:.2f}-{r['cpu_ratio_max']:.2f})"


def _side_by_side_row(label: str, r: dict, goal: str, base: str = "ref") -> list[str]:
    """One stage's row: wall times, the ratio and its goal, CPU-time ratio, system time, peak RSS."""
    return [label, f"{r[f'{base}_wall_s']:.1f}", f"{r['ours_wall_s']:.1f}", _ratio_cell(r), goal, _cpu_cell(r),
            f"{r[f'{base}_sys_s']:.1f} / {r['ours_sys_s']:.1f}", f"{r[f'{base}_peak_rss_mib']:.0f} / {r['ours_peak_rss_mib']:.0f}"]


def render_reference_tables(res: dict) -> str:
    """scripts/benchmark_reference.py's tables: our stages against the official code (when it
    was given) and against plain loops of the reference procedure, and the loops' calibration."""
    s = res["settings"]
    m = res["machine"]
    code = bool(s.get("reference_code"))
    lines = [f"Machine: {m['cpus']} CPUs, {m['processor']}, torch {m['torch']}, {m['threads']} threads per process. "
             f"{s['repeats']} interleaved runs of each side per row; ratio = reference wall time / ours (median, range)"
             + ("; *code* = the official GSLM code, *loop* = tools/reference_loops.py.\n" if code else ".\n")]
    stages = []
    if "make_cam" in res:
        stages.append((f"make_cam: {s['cam_images']} images, scales {s['scales']} + flip, {s['cam_workers']} loader worker(s)",
                       res["make_cam"], f">= {REFERENCE_TARGETS['make_cam']}"))
    if "train_cam" in res:
        stages.append((f"train_cam: {s['train_images']} images, batch {s['train_batch']}, crop {s['train_crop']}, 1 epoch, "
                       f"{s['train_workers']} loader workers", res["train_cam"], f">= {REFERENCE_TARGETS['train_cam']}"))
    for key, r in res.get("make_pseudo", {}).items():
        w = key.split("_")[1]
        stages.append((f"make_pseudo: {s['pseudo_images']} images, 2 CRFs each, {w} worker(s)", r,
                       f">= {REFERENCE_TARGETS['make_pseudo']}" if w == "2" else "-"))
    rows = []
    for label, r, goal in stages:
        if "code_over_ours" in r:
            rows.append(_side_by_side_row(f"{label}; code", r["code_over_ours"], goal, base="code"))
        rows.append(_side_by_side_row(f"{label}; loop" if code else label, r, goal))
        if "before_over_ours" in r:
            rows.append(_side_by_side_row("make_cam, our loop before these changes (instead of the reference)",
                                          r["before_over_ours"], "-", base="before"))
    lines.append(md_table(["stage", "reference s", "ours s", "ratio (wall)", "goal", "ratio (CPU time)", "system CPU s (ref / ours)",
                           "peak RSS MiB (ref / ours)"], rows))
    calib = [[label, f"{r['loop_over_code']['ref_wall_s']:.1f}", f"{r['loop_over_code']['code_wall_s']:.1f}",
              _ratio_cell(r["loop_over_code"]), _cpu_cell(r["loop_over_code"])] for label, r, _ in stages if "loop_over_code" in r]
    if calib:
        lines.append(md_table(["calibration: the loop against the official code", "loop s", "code s", "loop / code (wall)",
                               "loop / code (CPU time)"], calib))
    checks = []
    if "make_cam" in res:
        for key, who in (("code_cams", "official code"), ("cams", "reference loop")):
            if key in res["make_cam"]:
                c = res["make_cam"][key]
                checks.append([f"CAM files (ours vs {who})", f"{c['files']} files, max abs diff: high-res "
                               f"{c['max_abs_diff_high_res']:.1e}, strided {c['max_abs_diff_strided']:.1e}"])
    for key, r in res.get("make_pseudo", {}).items():
        for mk_key, who in (("code_masks", "official code"), ("masks", "reference loop")):
            if mk_key in r:
                mk = r[mk_key]
                checks.append([f"pseudo masks, {key.replace('_', ' ')} (ours vs {who})",
                               f"{mk['identical']} of {mk['files']} pixel-identical"])
    if checks:
        lines.append(md_table(["same work", "result"], checks))
    if "scaling" in res:
        rows = []
        for stage, sc in res["scaling"].items():
            n1, n2 = sorted({v["images"] for v in sc["runs"].values()})
            r, o = sc["runs"], sc["marginal_s_per_image"]
            rows.append([stage, f"{n1} / {n2}", f"{r[f'ref_{n1}']['wall_s']:.1f} / {r[f'ref_{n2}']['wall_s']:.1f}",
                         f"{r[f'ours_{n1}']['wall_s']:.1f} / {r[f'ours_{n2}']['wall_s']:.1f}",
                         f"{o['ref']:.2f} / {o['ours']:.2f}", f"{sc['steady_ratio']:.2f}",
                         f"{r[f'ref_{n1}']['peak_rss_mib']:.0f} / {r[f'ref_{n2}']['peak_rss_mib']:.0f}",
                         f"{r[f'ours_{n1}']['peak_rss_mib']:.0f} / {r[f'ours_{n2}']['peak_rss_mib']:.0f}"])
        lines.append(md_table(["cost vs image count", "images", "reference s", "ours s",
                               "s per further image (ref / ours)", "steady-state ratio", "reference peak RSS MiB",
                               "our peak RSS MiB"], rows))
    if "profile" in res:
        lines.append(_profile_tables(res["profile"]))
    return "\n".join(lines)


def _profile_tables(prof: dict) -> str:
    out = []
    for stage in ("make_cam", "train_cam"):
        if stage not in prof:
            continue
        mc = prof[stage]
        rows = [[side, f"{mc[side]['wall_s']:.1f}", f"{mc[side]['convolution_s']:.1f} ({mc[side]['convolution_s'] / mc[side]['wall_s']:.0%})",
                 ", ".join(f"{k} {v:.1f}" for k, v in list(mc[side]["top_ops_s"].items())[:4])] for side in ("ref", "ours")]
        out.append(md_table([f"{stage} under the profiler", "wall s", "convolutions s (share of wall)", "largest ops, self CPU s"], rows))
        out.append(f"{stage}: the convolutions are the same work on both sides (ours take less time in them only because "
                   f"their outputs land in memory the heap already holds); the reference's wall time over our convolution "
                   f"time, **{mc['conv_bound_ratio']:.2f}x**, bounds the ratio any loop around these float32 kernels can reach.\n")
    if "make_pseudo" in prof:
        mp = prof["make_pseudo"]
        total = sum(mp["s_per_image"].values())
        rows = [[k, f"{v * 1000:.0f}", f"{v / total:.0%}"] for k, v in mp["s_per_image"].items()]
        out.append(md_table([f"our make_pseudo by part ({mp['images']} images, 1 process)", "ms per image", "share"], rows))
    return "\n".join(out)


def render_node_estimate(doc: dict) -> str:
    from tools.node_estimate import render

    return f"`{doc['command']}` ({made_on(doc)}):\n\n{placeholder(doc)}{render(doc['data'])}\n"


def render_benchmark_reference(doc: dict) -> str:
    return (f"`{doc['command']}` ({made_on(doc)}), which also writes `work_dirs/benchmark_reference/"
            f"benchmark_reference.{{json,md}}`:\n\n{placeholder(doc)}{render_reference_tables(doc['data'])}\n")


# --------------------------------------------------------------------------
# the torch CRF against pydensecrf (scripts/crf_agreement.py, crf_throughput.py)
# --------------------------------------------------------------------------
def _crf_r(s: dict, k: str, fmt: str = "{:.6f}") -> str:
    v = s[k]
    return " / ".join(fmt.format(v[x]) for x in ("min", "median", "mean"))


def render_crf_agreement(doc: dict) -> str:
    """The markdown table docs/crf_torch.md quotes, from a published crf_agreement document."""
    d = doc["data"]
    s, m, st = d["summary"], d["pseudo_mask_miou"], d["settings"]
    n = s["label_crf_fg_agreement"]["n"]
    rows = [
        ["label CRF (make_pseudo's fg map), pixels with the same label", _crf_r(s, "label_crf_fg_agreement")],
        ["label CRF (make_pseudo's bg map), pixels with the same label", _crf_r(s, "label_crf_bg_agreement")],
        ["images whose fg and bg maps are bitwise equal", f"{s['images_with_bitwise_equal_label_maps']} of {n}"],
        ["pseudo mask (combine_fg_bg), pixels with the same label", _crf_r(s, "pseudo_mask_agreement")],
        ["probability CRF (DeepLab's parameters, 21 classes), same argmax", _crf_r(s, "prob_crf_argmax_agreement")],
        ["probability CRF, largest probability difference", _crf_r(s, "prob_crf_max_abs_diff", "{:.2g}")],
        ["probability CRF, share of bitwise-equal probabilities", _crf_r(s, "prob_crf_bitwise_equal_share")],
    ]
    if "inexact_label_crf_differing_pixels" in s:
        rows += [
            ["exact=False (torch.softmax): label CRF pixels that differ (fg + bg)",
             _crf_r(s, "inexact_label_crf_differing_pixels", "{:.0f}")],
            ["exact=False: probability CRF, same argmax", _crf_r(s, "inexact_prob_crf_argmax_agreement")],
            ["exact=False: largest probability difference", _crf_r(s, "inexact_prob_crf_max_abs_diff", "{:.2g}")],
            ["exact=False: share of bitwise-equal probabilities", _crf_r(s, "inexact_prob_crf_bitwise_equal_share", "{:.3f}")],
        ]
    gap = m["abs_difference_torch_vs_pydensecrf"]
    miou = (f"{m['pydensecrf']['as_background']:.2f} / {m['pydensecrf']['confident']:.2f}; "
            f"{m['torch']['as_background']:.2f} / {m['torch']['confident']:.2f} (difference "
            f"{gap['as_background']:.2f} / {gap['confident']:.2f}); "
            f"{m['no_crf']['as_background']:.2f} / {m['no_crf']['confident']:.2f}")
    rows.append(["pseudo-mask mIoU, 255 as background / confident pixels (pydensecrf; torch; no CRF)", miou])
    head = (f"`{doc['command']}` ({n} synthetic scenes, {st['sizes']} sizes, torch on {st['device']} with "
            f"{st['threads']} thread(s), pydensecrf2 {st['pydensecrf2']}"
            + (f"; {made_on(doc)}" if "made_on" in doc else "") + "):\n\n")
    return head + md_table(["per image: min / median / mean", "torch against pydensecrf"], rows)


def render_crf_throughput(doc: dict) -> str:
    """The markdown table docs/crf_torch.md quotes, from a published crf_throughput document."""
    d = doc["data"]
    st, r, q = d["settings"], d["images_per_s"], d["ratio_to_pydensecrf_1_proc"]
    rows = [[k, f"{r[k]['median']:.3f} ({r[k]['min']:.3f}-{r[k]['max']:.3f})",
             f"{q[k]['median']:.2f} ({q[k]['min']:.2f}-{q[k]['max']:.2f})"] for k in r]
    lb, la = st["load_average_before"], st["load_average_after"]
    head = (f"`{doc['command']}` ({st['images']} images x {st['repeats']} interleaved repeats; {st['work']}; "
            f"OMP_WAIT_POLICY {st['omp_wait_policy']}; load average {lb[0]:.1f} before, {la[0]:.1f} after"
            + (f"; {made_on(doc)}" if "made_on" in doc else "") + "):\n\n")
    return head + md_table(["configuration", "images/s: median (range)", "ratio to pydensecrf, 1 proc: median (range)"],
                           rows)


# --------------------------------------------------------------------------
# the graded bench (scripts/compare_methods.py --bench configs/bench/graded.yaml)
# --------------------------------------------------------------------------
def _pp(v: dict | None) -> str:
    """mean ± std in points (n > 1), the value alone for one run."""
    if not v or v.get("mean") is None:
        return "-"
    return f"{100 * v['mean']:.2f}" + (f" ± {100 * v['std']:.2f}" if v.get("n", 1) > 1 else "")


def _signed(v: dict | float | None) -> str:
    if isinstance(v, dict):
        if not v or v.get("mean") is None:
            return "-"
        return f"{100 * v['mean']:+.2f}" + (f" ± {100 * v['std']:.2f}" if v.get("n", 1) > 1 else "")
    return "-" if v is None else f"{100 * v:+.2f}"


def _level_name(lv: dict) -> str:
    return f"{lv['level']} (signal {lv['signal']:.2f})"


def render_graded(d: dict) -> str:
    levels = d["levels"]
    out = [f"Levels: {', '.join(_level_name(lv) for lv in levels)}; body signal = 1 - `data.synthetic.shared_body`; "
           f"training seeds {', '.join(map(str, d['seeds']))} on data seed {d['data_seed']}; controls and held-out runs with "
           f"training seed {d.get('ref_seed', 0)}; the held-out draw is data seed {d['heldout_data_seed']}.\n"]
    # gates
    rows = []
    for lv in levels:
        g = lv.get("gates") or {}
        probe = g.get("probe")
        base = g.get("baseline") or {}
        prem = [v["premise"]["ok"] for v in base.values()]
        part = [v["part"]["ok"] for v in base.values()]
        fails = sorted({c for v in base.values() for c, x in v["part"]["per_class"].items() if not x["ok"]})
        flood = sorted({c for v in base.values() for c in v["premise"]["checks"]["no_flooding"]["value"]})
        rows.append([_level_name(lv), f"{100 * probe['accuracy']:.1f} vs {100 * probe['chance']:.1f}" if probe else "-",
                     f"{sum(prem)} of {len(prem)}" + (f" (flooding: {', '.join(flood)})" if flood else ""),
                     f"{sum(part)} of {len(part)}" + (f" (failing: {', '.join(fails)})" if fails else ""),
                     {True: "yes", False: "**no**", None: "incomplete"}[g.get("ok")]])
    out.append("#### Gates (checked before the method arms ran)\n\n" + md_table(
        ["level", "body-family probe: accuracy vs chance (%)", "premise: baseline runs meeting it", "part gate: baseline runs",
         "gates hold"], rows))
    # like-for-like
    rows = []
    for lv in levels:
        for arm, a in lv["arms"].items():
            v, t = a["splits"]["val"], a["splits"]["train"]
            rows.append([_level_name(lv), f"{arm} (n={a['n']})", _pp(v["cam_miou"]), _pp(v["cam_crf_miou"]), _pp(t["cam_miou"]),
                         _pp(t["pseudo_miou_255_as_bg"]), _pp(t["pseudo_miou_confident"]), _pp(v["body"]), _pp(v["background_fp"]),
                         _pp(v["decoy_body_fp"]), _signed(a["gains"].get("val:cam_miou")),
                         "-" if a.get("gt_gap_share") is None else f"{100 * a['gt_gap_share']:.0f}%"])
    out.append("#### Like for like: every arm at its best threshold (mean ± std over seeds)\n\n" + md_table(
        ["level", "arm", "CAM mIoU (val)", "CAM+CRF (val)", "CAM mIoU (train)", "pseudo masks, 255 as bg (train)",
         "pseudo masks, confident (train)", "body covered (val)", "background FP (val)", "decoy-body FP (val)",
         "CAM mIoU (val) vs baseline, paired by seed", "share of the ground-truth control's gap (val)"], rows)
        + "\n" + "".join(f"* {_level_name(lv)}: " + (
            "the ground-truth control has not run: no share is computed" if lv.get("gt_gap") is None else
            f"the ground-truth control's gap (val CAM mIoU over the baseline of its seed) {_signed(lv['gt_gap'])}"
            + ("" if lv.get("gt_gap_beyond_noise") else ", not known to be beyond twice the baseline's seed noise (three seeds): no share is computed"))
            + ".\n" for lv in levels if "gt_gap" in lv))
    # the reference's protocol
    rows = []
    for lv in levels:
        for arm, a in lv["arms"].items():
            for model, v in a["models"].items():
                label = "CAM @ 0.15" if model in ("final", "GLM") else f"CAM+CRF @ {0.15 + 0.1 * (int(model.split()[-1]) - 1):.2f}"
                rows.append([_level_name(lv), arm, model if model != "final" else "its network", label, _pp(v["train"]), _pp(v["val"])])
    out.append("#### The reference's protocol: the GLM's CAM at 0.15, each SLM round's CAM+CRF at its round threshold\n\n" + md_table(
        ["level", "arm", "model", "number", "train", "val"], rows))
    # controls
    rows = []
    for lv in levels:
        for name, c in lv["controls"].items():
            g = c.get("gains", {})
            rows.append([_level_name(lv), name, pct(c.get("val:cam_miou")), pct(c.get("train:cam_miou", c.get("cam_miou_train"))),
                         _signed(g.get("val:cam_miou")), _signed(g.get("train:cam_miou")), _signed(g.get("train:pseudo_miou_255_as_bg")),
                         "broken (must not gain)" if c["broken"] else "-"])
    if rows:
        out.append("#### Controls (one training seed; gains over the baseline run of the same seed, the GLM of the GSLM controls)\n\n"
                   + md_table(["level", "control", "CAM mIoU (val)", "CAM mIoU (train)", "vs baseline (val)", "vs baseline (train)",
                               "pseudo masks vs baseline (train)", ""], rows))
    # held-out
    rows = []
    for lv in levels:
        for arm, h in lv["heldout"].items():
            base = lv["heldout"].get("baseline CAM")
            rows.append([_level_name(lv), arm, pct(h["val"]["cam_miou"]), pct(h["train"]["cam_miou"]), pct(h["train"]["reference"]),
                         pct(h["train"]["pseudo_miou_255_as_bg"]), pct(h["train"]["pseudo_miou_confident"]),
                         "-" if base is None or arm == "baseline CAM" else f"{100 * (h['val']['cam_miou'] - base['val']['cam_miou']):+.2f}"])
    if rows:
        out.append(f"#### Held-out data seed {d['heldout_data_seed']} (one run per arm and level, no setting tuned on it)\n\n" + md_table(
            ["level", "arm", "CAM mIoU (val)", "CAM mIoU (train)", "reference protocol, last model (train)",
             "pseudo masks, 255 as bg (train)", "pseudo masks, confident (train)", "CAM mIoU (val) vs baseline"], rows))
    # dose-response
    rows = []
    for arm, v in d["verdict"].items():
        for key, s in v["measures"].items():
            rows.append([arm, key.replace(":", ", "), *(_slope_cells(s))])
        for cname, s in v["broken_controls"].items():
            rows.append([f"{arm}: control {cname}", "val, cam_miou", *(_slope_cells(s))])
    out.append("#### Dose-response: the gain over the baseline against the body's class signal\n\n" + md_table(
        ["arm", "measure (split, metric)", "gain at the weakest signal", "gain at the strongest", "difference", "2 x seed noise",
         "grows"], rows))
    out.append("\n".join(f"* **{arm}**: {_works(v, ' on this bench')}: {v['why']}." for arm, v in d["verdict"].items()) + "\n")
    if d.get("levels_out_of_the_verdict"):
        out.append(_out_of_the_verdict(d) + "\n")
    nr = [f"{lv['level']}: {', '.join(lv['not_run'])}" for lv in levels if lv.get("not_run")]
    if nr:
        out.append("**Not run** (`scripts/compare_methods.py` resumes and adds them): " + "; ".join(nr) + ".\n")
    return "\n".join(out)


def _works(v: dict, where: str = "") -> str:
    return {True: f"works{where}", False: f"does not work{where}", None: "no verdict"}[v["works"]]


def _out_of_the_verdict(d: dict) -> str:
    return ("Kept out of the verdict, their gates not holding (shown above, not counted): "
            + ", ".join(d["levels_out_of_the_verdict"]) + ".")


def _slope_cells(s: dict) -> list[str]:
    if "difference" not in s:
        return ["-", "-", "-", "-", s.get("why", "-")]
    seeds = s.get("seeds", 3)
    return [_signed(s["gain_at_none"]), _signed(s["gain_at_most"]), _signed(s["difference"]),
            f"{100 * s['noise']:.2f}" if seeds >= 2 else "-",
            {True: "yes", False: "no", None: f"not called ({seeds} seed{'s' if seeds != 1 else ''})"}[s["grows"]]]


def render_compare_graded(doc: dict) -> str:
    d = doc["data"]
    took = f"; its runs took {int(d['pipeline_seconds'] // 60)} min in all" if d.get("pipeline_seconds") else ""
    return (f"Measured with `{doc['command']}` ({made_on(doc)}{took}), which also writes `{d.get('out', 'work_dirs/compare_graded')}/"
            f"graded.{{json,md}}`:\n" + placeholder(doc) + "\n" + render_graded(d))


def render_graded_headline(doc: dict) -> str:
    d = doc["data"]
    rows = []
    for lv in d["levels"]:
        for arm, a in lv["arms"].items():
            rows.append([_level_name(lv), arm, str(a["n"]), _pp(a["splits"]["val"]["cam_miou"]), _signed(a["gains"].get("val:cam_miou")),
                         _pp(a["splits"]["train"]["pseudo_miou_255_as_bg"]), _signed(a["gains"].get("train:pseudo_miou_255_as_bg")),
                         {True: "yes", False: "**no**", None: "incomplete"}[(lv.get("gates") or {}).get("ok")]])
    verdicts = " ".join(f"**{arm}**: {_works(v, ' on this bench')} ({v['why']})." for arm, v in d["verdict"].items())
    return (f"The graded bench (`{d['bench_file']}`; {made_on(doc)}; `docs/results/{Path(doc.get('path', 'compare_graded.json')).name}`):\n"
            + placeholder(doc) + "\n" + md_table(["level", "arm", "seeds", "CAM mIoU (val)", "vs baseline", "pseudo masks (train, 255 as bg)",
                                                   "vs baseline", "gates hold"], rows) + "\n" + verdicts
            + (" " + _out_of_the_verdict(d) if d.get("levels_out_of_the_verdict") else "") + "\n")


# --------------------------------------------------------------------------
# IRN on the synthetic data (scripts/irn_bench.py)
# --------------------------------------------------------------------------
def render_irn_bench(d: dict) -> str:
    """The table: the source run's CAM / CRF / pseudo numbers, then each arm, mean ± std over seeds."""
    r = d["source_numbers"]
    pr = r["pseudo_regions"]
    rows = [["CAM (best threshold)", pct(r["cam_miou"]), "", "", "", "1"],
            ["CAM + CRF", pct(r["cam_crf_miou"]), "", "", "", "1"],
            ["pseudo masks (255 as background)", pct(r["pseudo_miou_255_as_bg"]), pct(pr["part_covered"]),
             pct(pr["body_covered"]), pct(pr["background_fp"]), "1"]]
    for arm, a in d["arms"].items():
        rows.append([arm, *(_pp(a[k]) for k in ("miou", "part_covered", "body_covered", "background_fp")), str(a["miou"]["n"])])
    return md_table([f"{d['split']} ({d['num_images']} images)", "mIoU", "part covered", "body covered",
                     "background FP", "seeds"], rows)


def render_irn_synthetic(doc: dict) -> str:
    """docs/irn.md's table, from a published irn_synthetic document (one per source run)."""
    return (f"({made_on(doc)})\n\n" + "\n".join(f"**{d['label']}** (`{d['command']}`):\n\n{render_irn_bench(d)}"
                                                   for d in doc["data"]["sources"]))


def render_irn_benchmark(doc: dict) -> str:
    """docs/irn.md's cost table, from a published irn_benchmark document (scripts/benchmark_irn.py)."""
    d = doc["data"]
    s = d["summary"]
    rows = [["the walk at 500 x 375 (2 classes): seconds", f"{s['sparse_500x375_s']:.2f}",
             f"{s['dense_copy_500x375_s']:.1f}", f"{s['reference_500x375_s']:.1f}" if s.get("reference_500x375_s") else "-"],
            ["the walk at 500 x 375: peak memory (MiB)", f"{s['sparse_500x375_peak_mib']:.0f}",
             f"{s['dense_copy_500x375_peak_mib']:.0f}",
             f"{s['reference_500x375_peak_mib']:.0f}" if s.get("reference_500x375_peak_mib") else "-"]]
    sizes = [[f"{w['w']} x {w['h']}", f"{w['seconds']:.2f}", f"{w['peak_mib']:.0f}"]
             for w in d["walk"] if w["impl"] == "sparse"]
    train = s.get("train_images_per_s", {})
    out = (f"`{doc['command']}` ({made_on(doc)}):\n" + placeholder(doc) + "\n"
           + md_table(["", "ours (sparse, float64)", "our dense copy (the reference's procedure)", "the reference's code"], rows)
           + "\n" + md_table(["our sparse walk at", "seconds", "peak MiB"], sizes))
    if s.get("speedup_vs_reference"):
        out += (f"\nAt 500 x 375 ours is {s['speedup_vs_reference']:.0f}x faster than the reference's code and holds "
                f"{s['memory_ratio_reference_over_sparse']:.0f}x less memory; its output differs from the reference's by "
                f"{d['equality_500x375']['sparse_vs_reference_max_abs']:.1e} at most (the maximum is "
                f"{d['equality_500x375']['reference_max']:.2f}).")
    if train:
        out += " Training the boundary branch (ResNet-50, frozen backbone): " + ", ".join(
            f"{v:.2f} images/s at {k.replace('crop', 'crop ').replace('_batch', ', batch ')}" for k, v in train.items()) + "."
    return out + "\n"
