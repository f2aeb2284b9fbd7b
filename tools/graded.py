"""The graded bench (configs/bench/graded.yaml, docs/synthetic_bench.md): levels of the body's
class signal, gates per level, every run scored on ``train`` and ``val`` under both
protocols, and the dose-response verdict.

* **Scores** (:func:`score_run`): for each model of a run (the final network; for GSLM the GLM
  and every SLM round) and each split (``train``, the images the pseudo masks are made for;
  ``val``, images no run trained on): the CAM at the sweep's best threshold, CAM+CRF there
  (the like-for-like protocol), the CAM at 0.15 and each round's CAM+CRF at its round
  threshold 0.15 + 0.1 (r - 1) (the reference's protocol), the pseudo masks under both
  conventions (255 as background; confident pixels only), and part / body / background /
  decoy-body coverage at the best threshold.
* **Gates** (:func:`level_gates`): before any method arm runs, the pretrained backbone's
  pooled features must separate the body families (tools.body_probe); on every baseline run
  the premise (tools.premise) and, per class, the score with its part erased between the
  class's score on images without it (the network's chance) and its score with the part.
* **Dose-response** (:func:`dose_response`): an arm works on this bench only if its gain over
  the baseline grows with the body's class signal (1 - shared_body) by more than twice the
  seed noise, and the broken controls of its method show no such slope.
"""
from __future__ import annotations

import copy
import statistics
from pathlib import Path

import numpy as np

from wsss.fileio import atomic_write_json, read_json

SPLITS = ("train", "val")
GLM_THRESHOLD = 0.15  # the reference prints its GLM's plain CAM at this threshold
SCORES = "bench_scores.json"  # <work_dir>/metrics/: a run's scores (a resumed bench reads them back)
# how far below the network's score on images without the class the part-erased score may lie
# (100 images: a few points of noise), and how far below the score with the part it must be
ERASED_BELOW_CHANCE = 0.05
ERASED_BELOW_PART = 0.10


# --------------------------------------------------------------------------
# the scores of one run
# --------------------------------------------------------------------------
def run_models(cfg, work: Path) -> list[dict]:
    """The models of a finished run: [{name, checkpoint, train_cams, train_pseudo, ref_threshold, ref_crf}]."""
    from gslm.outputs import round_dir, rounds_of

    rounds = rounds_of(cfg)
    if rounds == 0:
        return [{"name": "final", "checkpoint": str(work / "checkpoints" / "final.pth"), "train_cams": cfg.cam.out_dir,
                 "train_pseudo": cfg.pseudo.out_dir, "ref_threshold": GLM_THRESHOLD, "ref_crf": False}]
    from gslm.slm import report_threshold

    glm = work / "checkpoints" / "cam.pth"
    if not glm.is_file() and cfg.train.init_checkpoint:
        glm = Path(cfg.train.init_checkpoint)  # the GLM is that run's network, untrained further
    out = []
    for r in range(rounds + 1):
        out.append({"name": "GLM" if r == 0 else f"round {r}",
                    "checkpoint": str(glm if r == 0 else work / "checkpoints" / f"slm_round{r}.pth"),
                    "train_cams": str(round_dir(cfg, r) / "cams"), "train_pseudo": str(round_dir(cfg, r) / "pseudo"),
                    "ref_threshold": report_threshold(cfg, r), "ref_crf": r > 0})
    return out


def score_cams(cfg, split: str, cam_dir: str | Path, ref_threshold: float) -> dict:
    """The CAMs of ``split``: best threshold and mIoU, CAM+CRF there, the CAM and CAM+CRF at
    ``ref_threshold``, coverage at the best threshold (decoy bodies included)."""
    from wsss.cam.evaluate import crf_split, sweep_split, sweep_thresholds, _at
    from wsss.data.labels import ImageLabels
    from wsss.metrics import coverage, scores

    e = copy.deepcopy(cfg)
    e.eval_cam.report_threshold = ref_threshold
    thresholds = sweep_thresholds(e)
    sweep, regions = sweep_split(e, split, cam_dir, thresholds, 0, parts=True)
    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    results = sweep.results(names)
    best = max(results, key=lambda r: r["miou"])
    ref = min(results, key=lambda r: abs(r["threshold"] - ref_threshold))
    cov = coverage(_at(regions, best["threshold"]), names[1:])
    out = {"best_threshold": best["threshold"], "cam_miou": best["miou"],
           "cam_crf_miou": scores(crf_split(e, split, cam_dir, best["threshold"]), names)["miou"],
           "ref_threshold": ref["threshold"], "cam_miou_at_ref": ref["miou"],
           "cam_crf_miou_at_ref": scores(crf_split(e, split, cam_dir, ref["threshold"]), names)["miou"],
           "flooding": sorted(c for c in names[1:] if (best["precision"][c] or 0) <= (best["recall"][c] or 0))}
    out.update({k: cov.get(k) for k in ("part", "body", "background_fp", "decoy_body_fp")})
    return out


def score_pseudo(cfg, split: str, mask_dir: str | Path) -> dict:
    from wsss.data.labels import ImageLabels
    from wsss.pseudo.make import evaluate_masks

    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    m = evaluate_masks(cfg, mask_dir, split, names)
    prec = [m["confident_only"]["precision"][c] for c in names[1:] if m["confident_only"]["precision"].get(c) is not None]
    return {"pseudo_miou_255_as_bg": m["miou_255_as_background"], "pseudo_miou_confident": m["miou_confident_pixels"],
            "pseudo_confident_fraction": m["confident_fraction"], "pseudo_precision": float(np.mean(prec)) if prec else None}


def score_run(config: str, overrides: list[str], work: Path) -> dict:
    """Every model of a finished run scored on ``train`` and ``val`` (module docstring); the
    CAMs and pseudo masks of ``val`` go under <work>/bench_val/<model>/. Cached in
    <work>/metrics/bench_scores.json (a file made under other settings is scored again)."""
    import torch

    from wsss.cam.make import make_cams
    from wsss.cam.training import load_cam_model
    from wsss.config import load_config
    from wsss.pseudo.make import make_pseudo_masks

    cfg = load_config(config, [*overrides, f"work_dir={work}"])
    key = {"overrides": list(overrides), "splits": list(SPLITS)}
    path = work / "metrics" / SCORES
    if path.is_file() and read_json(path).get("key") == key:
        return read_json(path)
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    models = []
    for m in run_models(cfg, work):
        row = {k: m[k] for k in ("name", "checkpoint", "ref_threshold", "ref_crf")}
        for split in SPLITS:
            if split == "train":
                cams, pseudo = Path(m["train_cams"]), Path(m["train_pseudo"])
            else:
                d = work / "bench_val" / m["name"].replace(" ", "")
                cams, pseudo = d / "cams", d / "pseudo"
                model = load_cam_model(cfg, m["checkpoint"], torch.device("cpu"))
                make_cams(cfg, model, torch.device("cpu"), split=split, out_dir=cams, progress=False)
                make_pseudo_masks(cfg, split=split, cam_dir=cams, out_dir=pseudo, progress=False)
            row[split] = {**score_cams(cfg, split, cams, m["ref_threshold"]), **score_pseudo(cfg, split, pseudo)}
            # the reference's number for this model: the GLM's plain CAM, a round's CAM+CRF
            row[split]["reference"] = row[split]["cam_crf_miou_at_ref" if m["ref_crf"] else "cam_miou_at_ref"]
        models.append(row)
    out = {"key": key, "work_dir": str(work), "models": models}
    atomic_write_json(path, out)
    return out


def read_scores(work: Path) -> dict | None:
    path = work / "metrics" / SCORES
    return read_json(path) if path.is_file() else None


# --------------------------------------------------------------------------
# the shuffled-targets control's masks
# --------------------------------------------------------------------------
def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) (n > 1) that moves every index: a random order, each
    element sent to the next one in it (one cycle)."""
    order = rng.permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def write_shuffled_masks(root: Path, out: Path, split: str = "train_aug", seed: int = 0) -> Path:
    """Ground-truth masks shuffled between images: image i gets the mask of another image
    (a fixed derangement of ``split``), resized to its size (nearest), with the donor's
    classes renamed to i's own (the k-th largest donor class becomes i's k-th class, cycling).
    Targets of the right classes and of object-like sizes and shapes, from the wrong image:
    seed reactivation that gains from them does not need the image's own targets. Images
    outside ``split`` (val) keep their own masks (never trained on)."""
    from PIL import Image

    from wsss.data.voc import VOCLayout
    from wsss.fileio import read_mask, write_palette_png

    done = out / "done"
    if done.is_file():
        return out
    layout = VOCLayout(root)
    ids = layout.read_split(split)
    perm = derangement(len(ids), np.random.default_rng([seed, 0x5F1E]))
    donor = {i: ids[j] for i, j in zip(ids, perm)}  # no image its own
    for image_id in ids:
        own = read_mask(layout.mask(image_id, "SegmentationClassAug"))
        d = read_mask(layout.mask(donor[image_id], "SegmentationClassAug"))
        if d.shape != own.shape:
            d = np.asarray(Image.fromarray(d).resize(own.shape[::-1], Image.NEAREST))
        mine = [int(c) for c in np.unique(own) if c not in (0, 255)]
        theirs = sorted((int(c) for c in np.unique(d) if c not in (0, 255)), key=lambda c: -int((d == c).sum()))
        mapped = d.copy()
        for k, c in enumerate(theirs):
            mapped[d == c] = mine[k % len(mine)] if mine else 0
        write_palette_png(out / f"{image_id}.png", mapped)
    for image_id in sorted(set(layout.read_split("val")) - set(ids)):
        m = read_mask(layout.mask(image_id, "SegmentationClassAug"))
        write_palette_png(out / f"{image_id}.png", m)
    done.write_text("ok\n")
    return out


# --------------------------------------------------------------------------
# gates
# --------------------------------------------------------------------------
def part_gate(reliance: dict) -> dict:
    """Per class: the score with its part erased lies between the network's chance (its mean
    score on images without the class, less ERASED_BELOW_CHANCE) and its score with the part
    (less ERASED_BELOW_PART): the part names the class, and the body does not argue against it."""
    out = {}
    for name, m in reliance["per_class"].items():
        if not m["images"]:
            out[name] = {"ok": False, "why": "no image"}
            continue
        lo, hi = m["absent"] - ERASED_BELOW_CHANCE, m["with_part"] - ERASED_BELOW_PART
        out[name] = {"with_part": m["with_part"], "part_erased": m["part_erased"], "chance": m["absent"],
                     "ok": bool(lo <= m["part_erased"] <= hi)}
    return {"ok": all(v["ok"] for v in out.values()), "per_class": out,
            "rule": f"chance - {ERASED_BELOW_CHANCE} <= part erased <= with part - {ERASED_BELOW_PART}"}


def baseline_gates(config: str, overrides: list[str], work: Path) -> dict:
    """The premise and the part gate of one finished baseline run (cached in its metrics)."""
    import torch

    from tools.part_reliance import measure_part_reliance
    from tools.premise import check_premise
    from wsss.cam.training import load_cam_model
    from wsss.config import load_config
    from wsss.data.labels import ImageLabels

    path = work / "metrics" / "bench_gates.json"
    if path.is_file():
        return read_json(path)
    cfg = load_config(config, [*overrides, f"work_dir={work}"])
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    model = load_cam_model(cfg, work / "checkpoints" / "final.pth", torch.device("cpu"))
    names = ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    rel = measure_part_reliance(model, cfg.data.root, cfg.eval_cam.split, cfg.data.num_classes, cfg.train.aug.mean,
                                cfg.train.aug.std, torch.device("cpu"), names)
    pseudo = work / "metrics" / "pseudo_eval.json"
    premise = check_premise(read_json(work / "metrics" / "cam_eval.json"), read_json(pseudo) if pseudo.is_file() else None)
    out = {"premise": premise, "part": part_gate(rel), "ok": premise["ok"] and part_gate(rel)["ok"]}
    atomic_write_json(path, out)
    return out


def probe_gate(config: str, overrides: list[str], out: Path) -> dict:
    """tools.body_probe on the level's scene design (cached in ``out``)."""
    if out.is_file():
        return read_json(out)
    import torch

    from tools.body_probe import probe_body_families
    from wsss.config import load_config

    cfg = load_config(config, overrides)
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    r = probe_body_families(cfg)
    atomic_write_json(out, r)
    return r


# --------------------------------------------------------------------------
# the dose-response verdict
# --------------------------------------------------------------------------
def mean_std_n(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def model_row(scores: dict | None, model: str = "final") -> dict | None:
    """One model's scores of a run (GSLM: "final" is its last round)."""
    if not scores:
        return None
    models = scores["models"]
    if model == "final":
        return models[-1]
    return next((m for m in models if m["name"] == model), None)


def paired_gains(arm_runs: dict[int, dict], base_runs: dict[int, dict], split: str, metric: str, model: str = "final") -> list[float]:
    """The arm's gain over the baseline run of the same training seed, per seed."""
    out = []
    for seed, s in arm_runs.items():
        a, b = model_row(s, model), model_row(base_runs.get(seed), "final")
        if a and b and a[split].get(metric) is not None and b[split].get(metric) is not None:
            out.append(a[split][metric] - b[split][metric])
    return out


def slope(levels: list[dict], key: str) -> dict:
    """From levels ordered by body signal: the gain at the strongest signal minus the gain at
    none, against twice the seed noise of that difference (sqrt of the two levels' summed
    variances); ``grows`` only beyond it and when no level in between falls below the
    no-signal level's gain by more than its noise; None (no call either way) while either end
    has fewer than MIN_SEEDS paired seeds (one seed has no noise to compare against)."""
    pts = [(lv["signal"], lv[key]) for lv in levels if lv.get(key) and lv[key]["mean"] is not None]
    if len(pts) < 2:
        return {"ok": False, "why": "fewer than two levels"}
    pts.sort(key=lambda p: p[0])
    (s0, g0), (s1, g1) = pts[0], pts[-1]
    noise = 2 * float(np.sqrt((g0["std"] or 0) ** 2 + (g1["std"] or 0) ** 2))
    diff = g1["mean"] - g0["mean"]
    monotone = all(g["mean"] >= g0["mean"] - noise for _, g in pts[1:])
    seeds = min(g0.get("n", 0), g1.get("n", 0))
    return {"from_signal": s0, "to_signal": s1, "gain_at_none": g0["mean"], "gain_at_most": g1["mean"], "difference": diff,
            "noise": noise, "seeds": seeds, "grows": bool(diff > noise and monotone) if seeds >= MIN_SEEDS else None,
            "by_level": [(s, g["mean"]) for s, g in pts]}


# --------------------------------------------------------------------------
# the graded bench's summary
# --------------------------------------------------------------------------
METRICS = ("cam_miou", "cam_crf_miou", "reference", "pseudo_miou_255_as_bg", "pseudo_miou_confident", "part", "body",
           "background_fp", "decoy_body_fp")
# the verdict's measures: (split, metric, model); the first is the primary one
VERDICT_ON = [("val", "cam_miou", "final"), ("train", "reference", "final"), ("train", "pseudo_miou_255_as_bg", "final"),
              ("train", "pseudo_miou_confident", "final")]
BROKEN_OF = {"GSLM": ["GSLM, sr_weight 0", "GSLM, shuffled ground-truth SR targets", "GSLM, shifted ground-truth SR targets"],
             "PPL progressive": ["PPL progressive, grid 1", "PPL progressive, permuted merge"]}
GT_CONTROL = "GSLM, ground-truth SR targets"
MIN_SEEDS = 3  # paired training seeds at both ends of a slope before it is called (the three per arm and level)


def level_signal(overrides: list[str]) -> float:
    """The body's class signal of a level: 1 - data.synthetic.shared_body (its last override)."""
    q = next((float(o.split("=", 1)[1]) for o in reversed(overrides) if o.startswith("data.synthetic.shared_body=")), 1.0)
    return round(1.0 - q, 6)


def _by_seed(rows: list[dict]) -> dict[int, dict]:
    return {r["seed"]: r.get("scores") for r in rows if r.get("scores")}


def level_summary(name: str, overrides: list[str], d: dict) -> dict:
    """One level: per arm and split the final model's scores (mean, std over seeds), GSLM's
    reference row for every model, paired gains over the baseline, the controls' gains."""
    from tools.published import BASELINE

    runs = {arm: _by_seed(rows) for arm, rows in d["runs"].items()}
    base = runs.get(BASELINE, {})
    arms = {}
    for arm, by_seed in runs.items():
        a = {"n": len(by_seed), "splits": {}, "gains": {}, "models": {}}
        for split in SPLITS:
            a["splits"][split] = {m: mean_std_n([model_row(s)[split].get(m) for s in by_seed.values()]) for m in METRICS}
        names = [m["name"] for m in next(iter(by_seed.values()))["models"]] if by_seed else []
        for model in names:
            a["models"][model] = {split: mean_std_n([(model_row(s, model) or {}).get(split, {}).get("reference") for s in by_seed.values()])
                                  for split in SPLITS}
        if arm != BASELINE:
            for split, metric, model in VERDICT_ON + [("val", "reference", "final"), ("train", "cam_miou", "final")]:
                a["gains"][f"{split}:{metric}"] = mean_std_n(paired_gains(by_seed, base, split, metric, model))
            if "round 1" in names:
                a["gains"]["val:cam_miou@round 1"] = mean_std_n(paired_gains(by_seed, base, "val", "cam_miou", "round 1"))
        arms[arm] = a
    ref = base.get(d.get("ref_seed", 0))
    controls = {}
    for c in d.get("controls", []):
        row = {"name": c["name"], "arm": c["arm"], "broken": c.get("broken", False), "cam_miou_train": c.get("cam_miou")}
        s = c.get("scores")
        if s:
            final = model_row(s)
            row.update({f"{split}:{m}": final[split].get(m) for split in SPLITS for m in METRICS})
            if ref:
                r = model_row(ref)
                row["gains"] = {f"{split}:{m}": final[split][m] - r[split][m] for split in SPLITS
                                for m in ("cam_miou", "reference", "pseudo_miou_255_as_bg", "pseudo_miou_confident")
                                if final[split].get(m) is not None and r[split].get(m) is not None}
        controls[c["name"]] = row
    # the share of the ground-truth control's gap an arm closes, where there is a gap to close:
    # the control's gain beyond twice the baseline's seed noise (which takes MIN_SEEDS seeds to know)
    gt = controls.get(GT_CONTROL, {}).get("gains", {}).get("val:cam_miou")
    base_val = arms.get(BASELINE, {}).get("splits", {}).get("val", {}).get("cam_miou") or {}
    base_std, base_n = base_val.get("std") or 0.0, base_val.get("n", 0)
    gap = gt if gt is not None and base_n >= MIN_SEEDS and gt > 2 * base_std else None
    for arm, a in arms.items():
        g = a["gains"].get("val:cam_miou", {}).get("mean")
        a["gt_gap_share"] = g / gap if g is not None and gap else None
    heldout = {arm: r["scores"] for arm, r in d.get("heldout", {}).items() if r.get("scores")}
    return {"level": name, "overrides": overrides, "signal": level_signal(overrides), "gates": d.get("gates"), "arms": arms,
            "gt_gap": gt, "gt_gap_beyond_noise": gap is not None,
            "controls": controls, "heldout": {arm: {split: model_row(s)[split] for split in SPLITS} for arm, s in heldout.items()},
            "heldout_models": {arm: {m["name"]: {split: m[split]["reference"] for split in SPLITS} for m in s["models"]}
                               for arm, s in heldout.items()},
            "not_run": d.get("not_run", [])}


def dose_response(levels: list[dict]) -> dict:
    """Per method arm and verdict measure: the slope of its gain over the levels' body signal
    (:func:`slope`), and that of each of its broken controls, whose noise is the baseline's seed
    noise at the two levels (a control runs one seed). An arm works on this bench when its
    primary measure's gain grows and no broken control's does."""
    from tools.published import BASELINE

    out = {}
    arms = sorted({a for lv in levels for a in lv["arms"] if a != BASELINE})
    for arm in arms:
        per = {}
        for split, metric, model in VERDICT_ON:
            key = f"{split}:{metric}"
            pts = [{"signal": lv["signal"], key: lv["arms"][arm]["gains"].get(key)} for lv in levels if arm in lv["arms"]]
            per[key] = slope(pts, key)
        broken = {}
        for cname in BROKEN_OF.get(arm, []):
            pts = []
            for lv in levels:
                c = lv["controls"].get(cname)
                b = lv["arms"].get(BASELINE, {}).get("splits", {}).get("val", {}).get("cam_miou")
                if c and c.get("gains", {}).get("val:cam_miou") is not None and b:
                    pts.append({"signal": lv["signal"], "g": {"mean": c["gains"]["val:cam_miou"], "std": b["std"], "n": b["n"]}})
            if pts:
                broken[cname] = slope(pts, "g")
        primary = per[f"{VERDICT_ON[0][0]}:{VERDICT_ON[0][1]}"]
        sloped = sorted(c for c, s in broken.items() if s.get("grows"))
        if "difference" not in primary:  # fewer than two levels with this arm's gains: no verdict
            out[arm] = {"measures": per, "broken_controls": broken, "works": None,
                        "why": "fewer than two levels whose gates hold have its gains yet"}
            continue
        if primary["grows"] is None:
            out[arm] = {"measures": per, "broken_controls": broken, "works": None,
                        "why": f"{primary['seeds']} paired training seed(s) at the levels it compares, fewer than {MIN_SEEDS}"}
            continue
        works = bool(primary.get("grows")) and not sloped
        why = ("its gain grows with the body's class signal beyond twice the seed noise, and no broken control's does" if works
               else "its gain grows, but so does that of " + ", ".join(sloped) + ": not the method's mechanism" if primary.get("grows")
               else "its gain does not grow with the body's class signal beyond twice the seed noise")
        out[arm] = {"measures": per, "broken_controls": broken, "works": works, "why": why}
    return out


def graded_summary(levels: dict[str, tuple[list[str], dict]]) -> dict:
    """levels: name -> (the level's overrides, its bench data). Ordered by body signal. A level
    whose gates do not hold (the premise, the part gate or the body probe failed on a run) is
    shown but kept out of the verdict: its data lack what the comparison relies on."""
    rows = sorted((level_summary(name, over, d) for name, (over, d) in levels.items()), key=lambda lv: lv["signal"])
    valid = [lv for lv in rows if (lv.get("gates") or {}).get("ok") is not False]
    return {"levels": rows, "verdict": dose_response(valid),
            "levels_out_of_the_verdict": [lv["level"] for lv in rows if lv not in valid]}
