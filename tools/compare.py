"""compare_methods: the synthetic test bench (scripts/compare_methods.py, docs/synthetic_bench.md).

Every arm (baseline CAM, PPL progressive, PPL explicit, GSLM) runs its pipeline up to the
pseudo masks on the same synthetic data with several training seeds, and once more on a
held-out data seed that no config was tuned on. The bench then

* checks the premise on the baseline runs (tools.premise): parts covered, bodies not,
  no class flooding, precise pseudo masks; without it the bench cannot say anything;
* reports each arm's mean and standard deviation, and calls a difference from the baseline
  an effect only when it is larger than twice the baseline's standard deviation;
* runs the controls: the untrained network (the scale), GSLM with ``sr_weight=0`` (SLM
  fine-tuning without seed reactivation), GSLM with ground-truth and with shifted
  ground-truth SR targets (the machinery with right and with wrong targets), PPL with
  ``cam_source=full`` against ``concat``.

Writes <out>/bench.json and bench.md; ``--results`` also publishes the JSON for docs/synthetic_bench.md.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.fileio import atomic_write_json, atomic_write_text, read_json

REPO = Path(__file__).resolve().parents[1]
STAGES = "train_cam,make_cam,eval_cam,make_pseudo,eval_pseudo"
BASELINE = "baseline CAM"
ARMS = {
    BASELINE: "configs/cam/cam_r18_synthetic.yaml",
    "PPL progressive": "configs/ppl/ppl_progressive_r18_synthetic.yaml",
    "PPL explicit": "configs/ppl/ppl_explicit_r18_synthetic.yaml",
    "GSLM": "configs/gslm/gslm_r18_synthetic.yaml",
}
# The bench scores CAMs and pseudo masks on the 100-image train split only, so the arms whose
# CAMs nothing else reads make them for that split alone; GSLM's rounds make theirs on
# train_aug, as the method needs (its SR targets)
ARM_OVERRIDES = {
    BASELINE: ["cam.split=train", "pseudo.split=train"],
    "PPL progressive": ["cam.split=train", "pseudo.split=train"],
    "PPL explicit": ["cam.split=train", "pseudo.split=train"],
    "GSLM": [],
}
# GSLM's GLM is the baseline CAM network under the baseline's config (the GSLM config adds
# only its gslm section): when the bench runs the baseline on the same seed and data, the
# GSLM runs start their rounds from its weights instead of training the same network again
GLM_OF = {"GSLM": BASELINE}
# the numbers every run reports, and what the tables call them
METRICS = {
    "cam_miou": "CAM mIoU",
    "cam_crf_miou": "CAM+CRF mIoU",
    "pseudo_miou_255_as_bg": "pseudo-mask mIoU",
    "part": "part covered",
    "body": "body covered",
    "background_fp": "background FP",
}


@dataclass
class Control:
    name: str
    arm: str  # the arm whose config it changes
    overrides: list[str]
    stages: str = STAGES
    expect: str = ""  # what it must show, in words
    weights_of: str = ""  # an arm: reuse its first seed's trained weights (CAMs only, no training)
    # what it is measured against (the graded bench, tools.graded): "GLM" (its GLM, the baseline
    # run of the same seed), "round 1" (the GSLM arm's first round, the same schedule), "arm"
    # (the arm's run of the same seed); broken: a control that must not gain (no slope either)
    reference: str = ""
    broken: bool = False


CONTROLS = [
    Control("untrained network", BASELINE, ["train.epochs=0"], "train_cam,make_cam,eval_cam",
            "the scale: CAMs of the network before any training step"),
    # one SLM round each: the targets under test are round 1's
    Control("GSLM, sr_weight 0", "GSLM", ["gslm.rounds=1", "gslm.sr_weight=0"],
            expect="one SLM round without seed reactivation"),
    Control("GSLM, ground-truth SR targets", "GSLM", ["gslm.rounds=1", "gslm.target_masks=SegmentationClassAug"],
            expect="right targets: CAM mIoU >= 5 points above the GLM and above sr_weight 0"),
    Control("GSLM, shifted ground-truth SR targets", "GSLM", ["gslm.rounds=1", "gslm.target_masks={shifted}"],
            expect="wrong targets: no gain over sr_weight 0"),
    Control("PPL progressive, cam_source full", "PPL progressive", ["ppl.cam_source=full"], "make_cam,eval_cam",
            expect="the full path's CAM of the same weights instead of the concatenated one", weights_of="PPL progressive"),
    # the graded bench's (configs/bench/graded.yaml): scored on train and val like the arms
    Control("GSLM, shuffled ground-truth SR targets", "GSLM", ["gslm.rounds=1", "gslm.target_masks={shuffled}"],
            expect="targets of another image: no gain over its GLM on val", reference="GLM", broken=True),
    Control("PPL progressive, grid 1", "PPL progressive", ["{grid1}"],
            expect="no patches (the branch sees the whole map): no gain over the baseline", reference="arm", broken=True),
    Control("PPL progressive, permuted merge", "PPL progressive", ["ppl.merge_positions=permuted"],
            expect="patch outputs merged at other patches' cells: no gain over the baseline", reference="arm", broken=True),
]
# the decoy bench's controls (the published ones); a bench file's `controls` names others
DEFAULT_CONTROLS = [c.name for c in CONTROLS[:5]]
for _c in CONTROLS:  # what the graded bench measures the first five against
    if _c.name == "GSLM, sr_weight 0":
        _c.reference, _c.broken = "GLM", True
    elif _c.name == "GSLM, ground-truth SR targets":
        _c.reference = "GLM"
    elif _c.name == "GSLM, shifted ground-truth SR targets":
        _c.reference, _c.broken = "GLM", True
    elif _c.name == "untrained network":
        _c.reference = "arm"
SCORED_CONTROLS = {c.name for c in CONTROLS if c.reference and c.stages == STAGES}


@dataclass
class Bench:
    out: Path
    bench_file: str = ""  # the bench file the overrides came from (configs/bench/*.yaml), as given
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_seed: int = 0
    heldout_data_seed: int = 1
    arms: dict[str, str] = field(default_factory=lambda: dict(ARMS))
    controls: bool = True
    overrides: list[str] = field(default_factory=list)
    heldout_arms: list[str] | None = None  # None: every arm
    arm_overrides: dict[str, list[str]] = field(default_factory=dict)  # overrides of one arm's runs (and its controls)
    reuse_glm: bool = True  # GLM_OF: start GSLM's rounds from the baseline run of the same seed and data
    collect_only: bool = False  # no new run: gather the finished ones (an interrupted bench's table)
    control_names: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLS))  # which controls run
    ref_seed: int = 0  # the training seed of the controls and the held-out runs
    # the graded bench: score every run on train and val under both protocols (tools.graded),
    # and check the level's gates before the method arms run
    score: bool = False
    level: str = ""  # the graded bench's level this bench is (its out is <out>/<level>)
    file_overrides: int = 0  # how many of ``overrides`` came from the bench file (a level's go after them)


DEFAULT_BENCH_FILE = "configs/bench/decoys.yaml"
BENCH_FILE_KEYS = {"out", "overrides", "arm_overrides", "arms", "controls", "levels"}


def load_bench_file(path: str | Path) -> dict:
    """A bench file (configs/bench/*.yaml): ``out`` (the default --out), ``overrides`` (every
    run's, before the command line's) and ``arm_overrides`` (arm name -> overrides of its runs
    and controls); optionally ``arms`` and ``controls`` (names: the ones it runs) and
    ``levels`` (the graded bench: level name -> overrides of that level's runs, which go
    under <out>/<level>). Anything else is a ConfigError naming the file and the key."""
    from wsss.config import read_yaml_mapping
    from wsss.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench file not found: {path}")
    data = read_yaml_mapping(path)
    if set(data) - BENCH_FILE_KEYS:
        raise ConfigError(f"{path}: unknown key(s) {sorted(set(data) - BENCH_FILE_KEYS)}; a bench file has {sorted(BENCH_FILE_KEYS)}")

    def overrides(value, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(o, str) and "=" in o for o in value):
            raise ConfigError(f"{path}: {key}: a list of KEY=VALUE strings")
        return list(value)

    arm_over = data.get("arm_overrides") or {}
    if not isinstance(arm_over, dict):
        raise ConfigError(f"{path}: arm_overrides: a mapping from arm name to a list of KEY=VALUE strings")
    if set(arm_over) - set(ARMS):
        raise ConfigError(f"{path}: arm_overrides: unknown arm(s) {sorted(set(arm_over) - set(ARMS))}; arms are {list(ARMS)}")
    def names(key: str, known: list[str]) -> list[str] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {key}: a list of names")
        if set(value) - set(known):
            raise ConfigError(f"{path}: {key}: unknown name(s) {sorted(set(value) - set(known))}; known: {known}")
        return list(value)

    levels = data.get("levels") or {}
    if not isinstance(levels, dict) or not all(isinstance(k, str) for k in levels):
        raise ConfigError(f"{path}: levels: a mapping from level name to a list of KEY=VALUE strings")
    return {"out": str(data.get("out") or "work_dirs/compare"), "overrides": overrides(data.get("overrides") or [], "overrides"),
            "arm_overrides": {arm: overrides(v, f"arm_overrides.{arm}") for arm, v in arm_over.items()},
            "arms": names("arms", list(ARMS)), "controls": names("controls", [c.name for c in CONTROLS]),
            "levels": {name: overrides(v, f"levels.{name}") for name, v in levels.items()}}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def data_overrides(data_seed: int, default_seed: int = 0, overrides: list[str] = ()) -> list[str]:
    """A data seed other than the configs' gets a folder of its own, beside the bench's data root
    (``data/synthetic_voc_seed1`` for the default root, ``<root>_seed1`` for one given in ``overrides``)."""
    if data_seed == default_seed:
        return []
    root = Path(next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("data.root=")),
                     "data/synthetic_voc/VOC2012"))
    return [f"data.synthetic.seed={data_seed}", f"data.root={root.parent.with_name(f'{root.parent.name}_seed{data_seed}') / root.name}"]


def seed_dir(b: Bench, arm: str, seed: int) -> Path:
    """The work_dir of an arm's run with a training seed on the bench's data seed."""
    return b.out / slug(arm) / f"seed{seed}"


def glm_source(b: Bench, arm: str) -> str | None:
    """The arm whose runs give ``arm`` its GLM in this bench (GLM_OF), or None: it trains its own."""
    src = GLM_OF.get(arm)
    return src if b.reuse_glm and src in b.arms else None


def arm_overrides(b: Bench, arm: str, baseline_work: Path | None) -> list[str]:
    """What an arm's run adds to the bench's overrides: its own (ARM_OVERRIDES, then the
    user's ``--arm-set``), and for an arm whose GLM is the baseline (GLM_OF) the baseline
    run's weights as its GLM, untrained further (``baseline_work``: that run's work_dir; None
    where the bench does not run the baseline there)."""
    out = [*ARM_OVERRIDES.get(arm, []), *b.overrides, *b.arm_overrides.get(arm, [])]
    if baseline_work is not None and glm_source(b, arm):
        out += ["train.epochs=0", f"train.init_checkpoint={baseline_work / 'checkpoints' / 'final.pth'}"]
    return out


def run_one(name: str, config: str, work: Path, overrides: list[str], stages: str, collect_only: bool = False) -> dict | None:
    """One pipeline run (resumable: a finished run is read back, not run again). With
    ``collect_only``: a finished run's numbers, None for one that has not finished."""
    if collect_only:
        done = all((work / "pipeline" / f"{st}.json").is_file() for st in stages.split(","))
        return collect_run(work) if done and (work / "metrics" / "summary.json").is_file() else None
    cmd = [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "--config", str(REPO / config),
           f"work_dir={work}", *overrides, "--stages", stages]
    print(f"[bench] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: run_pipeline failed with exit code {proc.returncode} (see its output above)")
    return collect_run(work, round(time.perf_counter() - t0, 1))


def collect_run(work: Path, seconds: float | None = None) -> dict:
    """The numbers of one finished run: the summary's, the coverage, the premise check."""
    from tools.premise import check_premise

    s = read_json(work / "metrics" / "summary.json")
    row = {"work_dir": str(work), **s["numbers"], "stage_seconds": s["seconds"], "seconds": seconds}
    cam_json = work / "metrics" / "cam_eval.json"
    cam = read_json(cam_json) if cam_json.is_file() else None
    if cam and cam.get("coverage"):
        for key in ("part", "body", "background_fp"):
            row[key] = cam["coverage"]["best"][key]
            row[f"{key}_fixed"] = cam["coverage"]["fixed"][key]
        pseudo_json = work / "metrics" / "pseudo_eval.json"
        row["premise"] = check_premise(cam, read_json(pseudo_json) if pseudo_json.is_file() else None)
    if s.get("gslm_rounds"):
        row["gslm_rounds"] = s["gslm_rounds"]
    return row


def write_shifted_masks(root: Path, out: Path) -> Path:
    """Ground-truth masks rolled by half the image width: SR targets of the right classes and
    sizes in the wrong places. (Flipped masks are no such control: objects near the middle
    land on themselves; on tiny data they helped as much as the right masks.)"""
    from wsss.fileio import read_mask, write_palette_png

    done = out / "done"
    if not done.is_file():
        for p in sorted((root / "SegmentationClassAug").glob("*.png")):
            m = read_mask(p)
            write_palette_png(out / p.name, np.ascontiguousarray(np.roll(m, m.shape[1] // 2, axis=1)))
        done.write_text("ok\n")
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm and metric: mean, std, n; and the verdict against the baseline."""
    agg = {}
    for arm, rows in runs.items():
        agg[arm] = {m: dict(zip(("mean", "std"), mean_std([r.get(m) for r in rows])), n=len(rows)) for m in METRICS}
    base = agg.get(BASELINE)
    if base:
        for arm, a in agg.items():
            for m, v in a.items():
                b = base[m]
                if arm == BASELINE or v["mean"] is None or b["mean"] is None:
                    continue
                v["diff"] = v["mean"] - b["mean"]
                v["effect"] = verdict(v["diff"], b["std"])
    return agg


def verdict(diff: float, baseline_std: float) -> str:
    """An effect only beyond 2 standard deviations of the baseline."""
    if baseline_std is None or abs(diff) <= 2 * baseline_std:
        return "none beyond noise"
    return "effect: higher" if diff > 0 else "effect: lower"


def grid1_stages(b: Bench) -> str:
    """The PPL progressive arm's own stages (the bench's overrides) with a 1 x 1 grid each."""
    from wsss.config import load_config

    cfg = load_config(str(REPO / ARMS["PPL progressive"]), arm_overrides(b, "PPL progressive", None))
    stages = ", ".join(f"{{split_after: {st.split_after}, grid: 1, epochs: {st.epochs}}}" for st in cfg.ppl.stages)
    return f"ppl.stages=[{stages}]"


def _scored(b: Bench, row: dict | None, config: str, overrides: list[str], work: Path) -> dict | None:
    """A finished run with its scores on train and val (the graded bench; tools.graded)."""
    if row is None or not b.score:
        return row
    from tools.graded import read_scores, score_run

    scores = read_scores(work) if b.collect_only else score_run(str(REPO / config), overrides, work)
    return {**row, "scores": scores} if scores else row


def _gates(b: Bench, base_runs: list[dict]) -> dict:
    """The level's gates (tools.graded): the body probe on the pretrained backbone, then the
    premise and the part gate of every baseline run made so far."""
    from tools.graded import baseline_gates, probe_gate

    config = str(REPO / ARMS[BASELINE])
    over = [*arm_overrides(b, BASELINE, None), *data_overrides(b.data_seed, 0, b.overrides)]
    probe = b.out / "gates_probe.json"
    out = {"probe": probe_gate(config, over, probe) if not b.collect_only or probe.is_file() else None, "baseline": {}}
    for r in base_runs:
        work = Path(r["work_dir"])
        if not b.collect_only or (work / "metrics" / "bench_gates.json").is_file():
            out["baseline"][str(r["seed"])] = baseline_gates(config, [*over, f"seed={r['seed']}"], work)
    checks = [out["probe"]["ok"] if out["probe"] else None] + [g["ok"] for g in out["baseline"].values()]
    out["ok"] = None if None in checks or not out["baseline"] else all(checks)
    return out


def run_bench(b: Bench, results: str | None = None) -> dict:
    from tools.published import render_bench

    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    gates = None
    for arm, config in b.arms.items():
        if b.score and arm != BASELINE and gates is None:
            # the gates are checked (and written) before any method arm runs
            gates = _gates(b, runs.get(BASELINE, []))
            atomic_write_json(b.out / "gates.json", gates)
            print(f"[bench] {b.level or b.out}: gates {'hold' if gates['ok'] else 'do NOT hold' if gates['ok'] is False else 'incomplete'}",
                  flush=True)
        for seed in b.seeds:
            work = seed_dir(b, arm, seed)
            over = [*arm_overrides(b, arm, seed_dir(b, BASELINE, seed)), *data_overrides(b.data_seed, 0, b.overrides), f"seed={seed}"]
            row = _scored(b, run_one(f"{arm}, seed {seed}", config, work, over, STAGES, b.collect_only), config, over, work)
            if row is not None:
                runs.setdefault(arm, []).append({"seed": seed, **row})
    if b.score and gates is None:
        gates = _gates(b, runs.get(BASELINE, []))
        if not b.collect_only:
            atomic_write_json(b.out / "gates.json", gates)
    controls = []
    selected = [c for c in CONTROLS if b.controls and c.name in b.control_names and c.arm in b.arms]
    if selected:
        from wsss.config import load_config

        root = Path(load_config(str(REPO / ARMS[BASELINE]), [*b.overrides, *data_overrides(b.data_seed, 0, b.overrides)]).data.root)
        if not root.is_absolute():
            root = REPO / root
        for c in selected:
            over = list(c.overrides)
            if any("{shifted}" in o for o in over):
                # (--collect-only starts no run: the folder's name is all it needs)
                shifted = b.out / "shifted_gt" if b.collect_only else write_shifted_masks(root, b.out / "shifted_gt")
                over = [o.replace("{shifted}", str(shifted)) for o in over]
            if any("{shuffled}" in o for o in over):
                from tools.graded import write_shuffled_masks

                shuffled = b.out / "shuffled_gt" if b.collect_only else write_shuffled_masks(root, b.out / "shuffled_gt")
                over = [o.replace("{shuffled}", str(shuffled)) for o in over]
            over = [grid1_stages(b) if o == "{grid1}" else o for o in over]
            if c.weights_of:
                over.append(f"cam.checkpoint={seed_dir(b, c.weights_of, b.ref_seed) / 'checkpoints' / 'final.pth'}")
            work = b.out / "controls" / slug(c.name)
            full = [*arm_overrides(b, c.arm, seed_dir(b, BASELINE, b.ref_seed)), *data_overrides(b.data_seed, 0, b.overrides),
                    f"seed={b.ref_seed}", *over]
            row = run_one(c.name, b.arms[c.arm], work, full, c.stages, b.collect_only)
            if c.name in SCORED_CONTROLS:
                row = _scored(b, row, b.arms[c.arm], full, work)
            if row is not None:
                controls.append({"name": c.name, "arm": c.arm, "overrides": c.overrides, "expect": c.expect,
                                 "reference": c.reference, "broken": c.broken, **row})
    heldout = {}
    for arm, config in b.arms.items():
        if b.heldout_arms is not None and arm not in b.heldout_arms:
            continue
        work = b.out / "heldout" / slug(arm)
        over = [*arm_overrides(b, arm, b.out / "heldout" / slug(BASELINE) if b.heldout_arms is None or BASELINE in b.heldout_arms else None),
                *data_overrides(b.heldout_data_seed, b.data_seed, b.overrides), f"seed={b.ref_seed}"]
        row = _scored(b, run_one(f"{arm}, held-out data seed {b.heldout_data_seed}", config, work, over, STAGES, b.collect_only),
                      config, over, work)
        if row is not None:
            heldout[arm] = {"seed": b.ref_seed, **row}
    missing = [f"{arm} seed {sd}" for arm in b.arms for sd in b.seeds if sd not in [r["seed"] for r in runs.get(arm, [])]]
    missing += [f"control: {c.name}" for c in selected if c.name not in [x["name"] for x in controls]]
    missing += [f"held-out: {arm}" for arm in b.arms if (b.heldout_arms is None or arm in b.heldout_arms) and arm not in heldout]
    data = {"bench_file": b.bench_file, "seeds": b.seeds, "not_run": missing, "data_seed": b.data_seed, "heldout_data_seed": b.heldout_data_seed, "overrides": b.overrides,
            "arm_overrides": b.arm_overrides, "glm_of": {a: glm_source(b, a) for a in b.arms if glm_source(b, a)},
            "stages": STAGES, "runs": runs, "aggregate": aggregate(runs), "heldout": heldout, "controls": controls,
            "premise": premise_summary(runs.get(BASELINE, []), heldout.get(BASELINE)),
            "control_checks": control_checks(runs, controls, b.ref_seed), "wall_seconds": round(time.perf_counter() - t0, 1),
            # the runs' own stage times: a resumed or --collect-only bench's wall time leaves most of them out
            "pipeline_seconds": round(sum(sum(r["stage_seconds"].values()) for r in
                                          [*(x for rs in runs.values() for x in rs), *controls, *heldout.values()]), 1),
            "out": str(b.out)}
    if b.score:
        data.update({"level": b.level, "gates": gates, "ref_seed": b.ref_seed})
    made_on = read_json(Path(next(iter(runs.values()))[0]["work_dir"]) / "metrics" / "summary.json").get("made_on") if runs else None
    return _save(b.out / "bench", data, render_bench(data), made_on, results)


def _save(stem: Path, data: dict, md: str, made_on: dict | None, results: str | None) -> dict:
    """``<stem>.json`` (the data with the machine and commit) and ``<stem>.md``; published
    to ``results`` when given."""
    from tools.published import publish
    from wsss.reports import run_info

    atomic_write_json(stem.with_suffix(".json"), {**data, **run_info(), "made_on": made_on})
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"saved {stem.with_suffix('.json')}")
    if results:
        print(f"published: {publish(results, Path(results).stem, data, made_on=made_on)}")
    return data


def premise_summary(base_runs: list[dict], heldout: dict | None) -> dict:
    checked = [r for r in base_runs if r.get("premise")] + ([heldout] if heldout and heldout.get("premise") else [])
    return {"ok": bool(checked) and all(r["premise"]["ok"] for r in checked), "runs": len(checked),
            "failed": [r["work_dir"] for r in checked if not r["premise"]["ok"]]}


def control_checks(runs: dict[str, list[dict]], controls: list[dict], seed: int = 0) -> dict:
    """The controls against their expectations, and PPL's full-path CAM against the
    concatenated one of the same weights (the run of training seed ``seed``); a check whose
    runs are missing is left out."""
    by = {c["name"]: c for c in controls}
    gt, shifted, no_sr = (by.get("GSLM, ground-truth SR targets"), by.get("GSLM, shifted ground-truth SR targets"),
                          by.get("GSLM, sr_weight 0"))
    glm = None
    if gt and gt.get("gslm_rounds"):
        glm = gt["gslm_rounds"][0].get("cam_miou_best")
    out = {}
    if gt and glm is not None:
        out["gt_targets_raise_cam_miou_by_5"] = gt["cam_miou"] - glm >= 0.05
        out["gt_targets_gain_over_glm"] = gt["cam_miou"] - glm
    if gt and no_sr:
        out["gt_targets_beat_sr_weight_0"] = gt["cam_miou"] > no_sr["cam_miou"]
    if shifted and no_sr:
        out["shifted_targets_no_gain_over_sr_weight_0"] = shifted["cam_miou"] <= no_sr["cam_miou"] + 0.01
    full = by.get("PPL progressive, cam_source full")
    concat = next((r for r in runs.get("PPL progressive", []) if r["seed"] == seed), None)
    if full and concat and full.get("cam_miou") is not None and concat.get("cam_miou") is not None:
        out["ppl_full_path_cam_minus_concat"] = full["cam_miou"] - concat["cam_miou"]
    return out


def run_graded(b: Bench, levels: dict[str, list[str]], results: str | None = None) -> dict:
    """The graded bench (tools.graded): ``b`` once per level, with the level's overrides after
    the bench's, into <out>/<level>; then the levels side by side and the dose-response
    verdict in <out>/graded.{json,md} (``results``: also published)."""
    import dataclasses

    from tools.graded import graded_summary
    from tools.published import render_graded

    t0 = time.perf_counter()
    done = {}
    for name, over in levels.items():
        lb = dataclasses.replace(b, out=b.out / slug(name), overrides=[*b.overrides[:b.file_overrides], *over,
                                                                       *b.overrides[b.file_overrides:]], level=name, score=True)
        print(f"[bench] level {name}: {' '.join(over)}", flush=True)
        done[name] = (over, run_bench(lb))
    summary = graded_summary(done)
    data = {"bench_file": b.bench_file, "overrides": b.overrides, "arm_overrides": b.arm_overrides, "seeds": b.seeds,
            "ref_seed": b.ref_seed, "data_seed": b.data_seed, "heldout_data_seed": b.heldout_data_seed, "arms": list(b.arms),
            "controls": [c for c in b.control_names if c in {x.name for x in CONTROLS}] if b.controls else [],
            "level_overrides": levels, "out": str(b.out), **summary,
            "pipeline_seconds": round(sum(d.get("pipeline_seconds", 0) for _, d in done.values()), 1),
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    made_on = next((d.get("made_on") for d in (read_json(b.out / slug(n) / "bench.json") for n in levels
                                                if (b.out / slug(n) / "bench.json").is_file()) if d.get("made_on")), None)
    return _save(b.out / "graded", data, render_graded(data), made_on, results)
