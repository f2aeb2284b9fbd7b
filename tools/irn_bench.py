"""Does IRN improve the pseudo masks it learns from? A bench on a finished run's CAMs and masks.

From one run (``--source``: a work_dir that went through make_pseudo), per training seed,
``scripts/run_pipeline.py --stages train_irn,make_irn_labels,eval_irn`` in a work_dir of its
own for each arm:

* **IRN**: relations from the run's pseudo masks (what the pipeline does);
* **boundary map of zeros** (control: ``irn.boundary=zeros``; the walk is then a blur of
  the CAM, and what IRN adds over it is the boundary network's; the first seed only, as
  nothing it uses is trained);
* **shuffled relation labels** (control: each image's relations from another image's
  pseudo mask; a boundary network that learns from them has nothing to learn);
* **ground-truth relations of other images** (a ceiling: the boundary network trained on
  the ground truth of the train_aug images *outside* the scored split, whose own masks are
  all 255; what the walk can do when the relations are right; ``--ceiling-seeds``, default 1).

Every arm's labels of ``irn.eval_split`` (the pseudo masks' own images) are scored against the
ground truth, and with the synthetic data's ``PartMasks/`` split into part, body (object
minus part) and background: the share of part and body pixels given their class, and of
background pixels given a class. The run's own CAM, CAM+CRF and pseudo-mask numbers come
from its ``metrics/``.

    python scripts/irn_bench.py --config configs/demo/demo_synthetic.yaml --source work_dirs/demo_synthetic \\
        --out work_dirs/irn_bench --seeds 0 1 2 --results docs/results/irn_synthetic.json
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from wsss.config import load_config
from wsss.data.voc import VOCLayout
from tools.graded import derangement, mean_std_n
from tools.published import _relative, publish, render_irn_bench
from wsss.fileio import DataError, atomic_write_json, atomic_write_text, read_json, read_mask, write_palette_png
from wsss.metrics import coverage, region_map, region_rows
from wsss.reports import REPO

ARMS = ("IRN", "IRN, boundary map of zeros", "IRN, shuffled relation labels", "IRN, ground-truth relations of other images")
SLUG = {"IRN": "irn", "IRN, boundary map of zeros": "zeros", "IRN, shuffled relation labels": "shuffled",
        "IRN, ground-truth relations of other images": "gt_other"}


def _copy_masks(voc: VOCLayout, ids: list[str], out: Path, pick) -> Path:
    """A mask folder: for each id, the file ``pick(id)`` returns (a path, or None for all 255)."""
    if (out / ".complete").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in ids:
        src = pick(i)
        if src is None:
            shape = read_mask(voc.mask(i, "SegmentationClassAug"), 255).shape
            write_palette_png(tmp / f"{i}.png", np.full(shape, 255, np.uint8))
        else:
            shutil.copyfile(src, tmp / f"{i}.png")
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def shuffled_masks(voc: VOCLayout, ids: list[str], pseudo: Path, out: Path, seed: int) -> Path:
    """Each id gets the pseudo mask of another id (a random derangement; images of one size)."""
    perm = derangement(len(ids), np.random.default_rng(seed))
    sizes = {read_mask(pseudo / f"{i}.png", 255).shape for i in ids}
    if len(sizes) > 1:
        raise DataError(f"{pseudo}: masks of several sizes; shuffled relation labels need images of one size")
    src = {i: pseudo / f"{ids[j]}.png" for i, j in zip(ids, perm)}
    return _copy_masks(voc, ids, out, src.get)


def gt_other_masks(voc: VOCLayout, ids: list[str], scored: set[str], out: Path) -> Path:
    """The ground truth of ids outside ``scored``; all 255 (no relation) on the scored ids."""
    return _copy_masks(voc, ids, out, lambda i: None if i in scored else voc.mask(i, "SegmentationClassAug"))


def regions(voc: VOCLayout, ids: list[str], labels: Path, num_classes: int) -> dict:
    """Shares of part and body pixels given their class, of background pixels given a class
    (255 counted as background): eval_cam's coverage (wsss.metrics) of a label folder."""
    k, n = num_classes, num_classes + 1
    rows = region_rows(k, False)
    conf = np.zeros((rows, n), np.int64)
    for i in ids:
        reg = region_map(read_mask(voc.mask(i, "SegmentationClass"), k), read_mask(voc.part_dir / f"{i}.png", k), k)
        lab = read_mask(labels / f"{i}.png", k).astype(np.int64)
        lab[lab == 255] = 0
        valid = reg != 255
        conf += np.bincount(reg[valid] * n + lab[valid], minlength=rows * n).reshape(rows, n)
    cov = coverage(conf, [str(c) for c in range(k)])
    return {"part_covered": cov["part"], "body_covered": cov["body"], "background_fp": cov["background_fp"]}


def run_arm(args, arm: str, seed: int, masks: Path | None) -> Path:
    work = Path(args.out) / SLUG[arm] / f"seed{seed}"
    over = [f"work_dir={work}", f"seed={seed}", f"irn.cam_dir={args.source}/cams", f"irn.split={args.split}",
            f"irn.eval_split={args.split}", f"irn.mask_dir={masks or Path(args.source) / 'pseudo'}",
            *(["irn.boundary=zeros"] if arm == "IRN, boundary map of zeros" else []), *args.overrides]
    if not (work / "metrics" / "irn_eval.json").is_file():
        cmd = [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "--config", args.config, *over,
               "--stages", "train_irn,make_irn_labels,eval_irn"]
        print(f"[irn_bench] {arm}, seed {seed}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
    return work


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--source", required=True, help="a work_dir with cams/, pseudo/ and metrics/ (through eval_pseudo)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ceiling-seeds", type=int, default=1, help="seeds of the ground-truth ceiling (the first N)")
    p.add_argument("--split", default="train", help="the images that get IRN labels and are scored")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--label", help="the source's name in the published table (default: --source)")
    p.add_argument("--results", help="publish here (docs/results/irn_synthetic.json): this source's entry is added "
                                      "to the file's, or replaces the one of the same label")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_config(args.config, [f"work_dir={args.source}", *args.overrides])
    voc = VOCLayout(cfg.data.root)
    src = Path(args.source)
    for need in (src / "cams", src / "pseudo", src / "metrics" / "pseudo_eval.json", voc.root / "PartMasks"):
        if not need.exists():
            raise SystemExit(f"irn_bench: {need} not found (the source run must have gone through eval_pseudo, "
                             "on synthetic data)")
    train_ids = voc.read_split(cfg.irn.train_split)
    scored = voc.read_split(args.split)
    n = cfg.data.num_classes
    out = Path(args.out)
    rows: dict[str, list[dict]] = {}
    for arm in args.arms:
        # the zero boundary's labels do not depend on the training seed (nothing it uses is
        # trained); the ceiling is a reference line, one seed unless asked for more
        seeds = {"IRN, boundary map of zeros": args.seeds[:1],
                 "IRN, ground-truth relations of other images": args.seeds[:args.ceiling_seeds]}.get(arm, args.seeds)
        for seed in seeds:
            masks = None
            if arm == "IRN, shuffled relation labels":
                masks = shuffled_masks(voc, train_ids, src / "pseudo", out / "masks" / f"shuffled_seed{seed}", seed)
            elif arm == "IRN, ground-truth relations of other images":
                masks = gt_other_masks(voc, train_ids, set(scored), out / "masks" / "gt_other")
            work = run_arm(args, arm, seed, masks)
            r = read_json(work / "metrics" / "irn_eval.json")
            rows.setdefault(arm, []).append({"seed": seed, "miou": r["miou_255_as_background"],
                                             **regions(voc, scored, work / "irn" / "labels", n)})
    cam = read_json(src / "metrics" / "cam_eval.json")
    pseudo = read_json(src / "metrics" / "pseudo_eval.json")
    ref = {"cam_miou": cam["miou"], "cam_crf_miou": cam.get("miou_crf"),
           "pseudo_miou_255_as_bg": pseudo["miou_255_as_background"],
           "pseudo_miou_confident": pseudo["miou_confident_pixels"],
           "pseudo_regions": regions(voc, scored, src / "pseudo", n)}
    keys = ("miou", "part_covered", "body_covered", "background_fp")
    arms = {a: {"runs": rs, **{k: {**mean_std_n(v := [x[k] for x in rs]), "values": v} for k in keys}}
            for a, rs in rows.items()}
    data = {"label": args.label or str(src), "command": shlex.join(["python", *[_relative(a) for a in sys.argv]]),
            "source": str(src), "split": args.split, "num_images": len(scored), "seeds": args.seeds,
            "config": args.config, "overrides": args.overrides, "source_numbers": ref, "arms": arms}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "irn_bench.json", data)
    md = render_irn_bench(data)
    atomic_write_text(out / "irn_bench.md", md)
    print(md)
    if args.results:
        import torch  # noqa: F401  (the machine line names the torch the runs used)

        have = read_json(args.results)["data"]["sources"] if Path(args.results).is_file() else []
        sources = [d for d in have if d["label"] != data["label"]] + [data]
        print(f"published: {publish(args.results, 'irn_synthetic', {'sources': sources})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
