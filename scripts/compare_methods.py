#!/usr/bin/env python
"""The synthetic test bench: baseline CAM, PPL progressive, PPL explicit and GSLM through
train_cam -> make_cam -> eval_cam -> make_pseudo -> eval_pseudo on the same synthetic data,
each on several training seeds and once on a held-out data seed, the premise check on the
baseline, and the controls (untrained network, GSLM with sr_weight 0, with ground-truth and
with shifted ground-truth SR targets, PPL with cam_source full). Writes <out>/bench.{json,md}
(docs/synthetic_bench.md explains every column and the verdict rule).

    python scripts/compare_methods.py        # the bench on its scene (configs/bench/decoys.yaml): ~7 h of runs
    python scripts/compare_methods.py --bench configs/bench/default_scene.yaml   # the configs' own scene
    python scripts/compare_methods.py train.epochs=3 --seeds 0 1 --no-controls   # overrides go to every run
    python scripts/compare_methods.py --collect-only --results docs/results/compare_decoys.json   # what the docs quote
    python scripts/compare_methods.py --arms "baseline CAM" GSLM --arm-set GSLM gslm.beta=3
    python scripts/compare_methods.py --bench configs/bench/graded.yaml   # the graded bench: every level, gates, both protocols
    python scripts/compare_methods.py --bench configs/bench/graded.yaml --collect-only --results docs/results/compare_graded.json

The bench file (``--bench``, YAML) holds the scene: overrides of every run, overrides of one
arm's runs, the default --out; the command line's overrides and --arm-set come after its.
Overrides go before --seeds / --arms / --heldout-arms (those take several values). GSLM's GLM
is the baseline CAM network: its runs start their SLM rounds from the baseline run of the
same seed and data (``train.init_checkpoint``) unless --train-glm.

Every run is a resumable run_pipeline work_dir under --out: an interrupted bench picks up
where it stopped. A bench file with ``levels`` (the graded bench) runs the bench once per
level into <out>/<level> (``--levels`` picks some), checks each level's gates before its
method arms, scores every run on train and val under both protocols, and ends with the
dose-response verdict (<out>/graded.{json,md}). Processes side by side: give each its own
--seeds / --levels / --controls / --heldout-arms, never the same run to two of them.
"""
import argparse
from pathlib import Path

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=None, metavar="YAML",
                   help="the bench file: the scene's overrides and the default --out (default: configs/bench/decoys.yaml)")
    p.add_argument("--out", default=None, help="where the runs go (default: the bench file's out)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every arm (>= 3 for a verdict)")
    p.add_argument("--heldout-data-seed", type=int, default=1, help="the data seed no config was tuned on")
    p.add_argument("--arms", nargs="+", default=None, help="a subset of the arms (names as in the table)")
    p.add_argument("--heldout-arms", nargs="*", default=None,
                   help="the arms run on the held-out data seed (default: all; the flag with no name: none)")
    p.add_argument("--arm-set", nargs=2, action="append", default=[], metavar=("ARM", "KEY=VALUE"),
                   help="an override of one arm's runs and controls (repeatable), e.g. --arm-set GSLM gslm.beta=3")
    p.add_argument("--train-glm", action="store_true",
                   help="GSLM trains its own GLM instead of starting from the baseline run of the same seed (the same network)")
    p.add_argument("--no-controls", action="store_true")
    p.add_argument("--controls", nargs="+", default=None, metavar="NAME",
                   help="the controls to run (default: the bench file's, else the decoy bench's five)")
    p.add_argument("--levels", nargs="+", default=None, metavar="LEVEL", help="graded bench: a subset of the bench file's levels")
    p.add_argument("--ref-seed", type=int, default=0, help="the training seed of the controls and of the held-out runs")
    p.add_argument("--collect-only", action="store_true", help="start no run: tabulate the finished ones (an interrupted bench)")
    p.add_argument("--results", default=None, metavar="JSON", help="also publish the bench there, with the machine and commit")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every run's config")
    a = p.parse_args()
    # a KEY=VALUE after a list option (--controls A B runtime.threads=1) is an override, not a name:
    # no arm, control or level has "=" in its name
    for opt in ("arms", "heldout_arms", "controls", "levels"):
        names = getattr(a, opt)
        if names:
            a.overrides += [n for n in names if "=" in n]
            kept = [n for n in names if "=" not in n]
            setattr(a, opt, kept if kept or opt == "heldout_arms" else None)  # --heldout-arms with no name: none
    from tools.compare import ARMS, CONTROLS, DEFAULT_BENCH_FILE, DEFAULT_CONTROLS, REPO, Bench, load_bench_file, run_bench, run_graded

    bench_file = a.bench or DEFAULT_BENCH_FILE  # the default: relative to the repository, wherever this runs
    bench = load_bench_file(bench_file if a.bench else REPO / bench_file)

    chosen = a.arms if a.arms is not None else bench["arms"]
    arms = {k: v for k, v in ARMS.items() if chosen is None or k in chosen}
    for given in (a.arms, a.heldout_arms, [arm for arm, _ in a.arm_set]):
        if given and set(given) - set(ARMS):
            raise SystemExit(f"unknown arm(s): {sorted(set(given) - set(ARMS))}; arms are {list(ARMS)}")
    arm_sets = {arm: list(kvs) for arm, kvs in bench["arm_overrides"].items()}
    for arm, kv in a.arm_set:
        arm_sets.setdefault(arm, []).append(kv)
    if a.controls and set(a.controls) - {c.name for c in CONTROLS}:
        raise SystemExit(f"unknown control(s): {sorted(set(a.controls) - {c.name for c in CONTROLS})}; controls are {[c.name for c in CONTROLS]}")
    if a.levels and set(a.levels) - set(bench["levels"]):
        raise SystemExit(f"unknown level(s): {sorted(set(a.levels) - set(bench['levels']))}; the bench file's levels are {list(bench['levels'])}")
    b = Bench(out=Path(a.out or bench["out"]), bench_file=bench_file, seeds=a.seeds, heldout_data_seed=a.heldout_data_seed, arms=arms,
              controls=not a.no_controls, overrides=[*bench["overrides"], *a.overrides], heldout_arms=a.heldout_arms,
              collect_only=a.collect_only, reuse_glm=not a.train_glm, arm_overrides=arm_sets,
              control_names=a.controls or bench["controls"] or list(DEFAULT_CONTROLS), ref_seed=a.ref_seed,
              file_overrides=len(bench["overrides"]))
    if bench["levels"]:
        # in the order given (two processes can start at different levels: neither waits for a data root the other draws)
        levels = {k: bench["levels"][k] for k in (a.levels or bench["levels"])}
        run_graded(b, levels, results=a.results)
    else:
        run_bench(b, results=a.results)


if __name__ == "__main__":
    run_script(main)
