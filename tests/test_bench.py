"""The synthetic bench's rules: the premise check, the verdict (an effect only beyond 2 std of
the baseline), the aggregation over seeds, the shifted-target control's masks."""
from pathlib import Path

import numpy as np
import pytest

from tools.premise import check_premise
from tools.compare import (ARMS, BASELINE, DEFAULT_BENCH_FILE, REPO, Bench, aggregate, arm_overrides, data_overrides,
                           load_bench_file, verdict, write_shifted_masks)
from wsss.config import load_config
from wsss.errors import ConfigError


def _cam_eval(part, body, prec, rec):
    return {"coverage": {"best": {"part": part, "body": body}},
            "best": {"iou": {"background": 0.9, "a": 0.5, "b": 0.5}, "precision": {"a": prec[0], "b": prec[1]},
                     "recall": {"a": rec[0], "b": rec[1]}}}


def test_premise_check_each_criterion():
    pseudo = {"confident_only": {"precision": {"a": 0.9, "b": 0.85}}}
    ok = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.8), (0.4, 0.3)), pseudo)
    assert ok["ok"] and all(c["ok"] for c in ok["checks"].values())
    assert not check_premise(_cam_eval(0.85, 0.3, (0.9, 0.8), (0.4, 0.3)), pseudo)["checks"]["parts_covered"]["ok"]
    assert not check_premise(_cam_eval(0.95, 0.7, (0.9, 0.8), (0.4, 0.3)), pseudo)["checks"]["bodies_not_covered"]["ok"]
    flood = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.3), (0.4, 0.8)), pseudo)
    assert not flood["ok"] and flood["checks"]["no_flooding"]["value"] == ["b"]
    low = check_premise(_cam_eval(0.95, 0.3, (0.9, 0.8), (0.4, 0.3)), {"confident_only": {"precision": {"a": 0.7, "b": 0.8}}})
    assert not low["ok"] and low["checks"]["pseudo_precision"]["value"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no part/body coverage"):
        check_premise({"coverage": None, "best": {}})


def test_verdict_and_aggregate():
    assert verdict(0.011, 0.005) == "effect: higher" and verdict(-0.011, 0.005) == "effect: lower"
    assert verdict(0.009, 0.005) == "none beyond noise"
    runs = {BASELINE: [{"cam_miou": v} for v in (0.40, 0.42, 0.44)], "X": [{"cam_miou": v} for v in (0.50, 0.52, 0.54)],
            "Y": [{"cam_miou": v} for v in (0.43, 0.45, 0.41)]}
    agg = aggregate(runs)
    assert agg[BASELINE]["cam_miou"]["mean"] == pytest.approx(0.42) and agg[BASELINE]["cam_miou"]["std"] == pytest.approx(0.02)
    assert agg["X"]["cam_miou"]["diff"] == pytest.approx(0.10) and agg["X"]["cam_miou"]["effect"] == "effect: higher"
    assert agg["Y"]["cam_miou"]["effect"] == "none beyond noise"  # +0.01 < 2 x 0.02
    assert agg["X"]["part"]["mean"] is None  # a metric no run reported


def test_heldout_data_root_sits_beside_the_benchs_root():
    assert data_overrides(0) == []  # the configs' own data
    assert data_overrides(1) == ["data.synthetic.seed=1", "data.root=data/synthetic_voc_seed1/VOC2012"]
    # a bench on other data (another scene) must not share the default bench's held-out root
    elong = data_overrides(1, 0, ["data.root=data/synthetic_voc_elongated/VOC2012", "train.epochs=10"])
    assert elong[-1] == "data.root=data/synthetic_voc_elongated_seed1/VOC2012"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "bench").glob("*.yaml")))
def test_shipped_bench_files_resolve_for_every_arm(name, tmp_path):
    """Every run a shipped bench file starts has a valid config: its keys exist and its values
    check, for every arm with its own overrides."""
    bench = load_bench_file(REPO / "configs" / "bench" / name)
    b = Bench(out=tmp_path, overrides=bench["overrides"], arm_overrides=bench["arm_overrides"])
    cfgs = {arm: load_config(str(REPO / config), arm_overrides(b, arm, None)) for arm, config in ARMS.items()}
    if name == Path(DEFAULT_BENCH_FILE).name:  # the default scene is the one that meets the premise
        for cfg in cfgs.values():
            assert cfg.data.synthetic.decoys == 2 and cfg.data.synthetic.scene == "elongated" and cfg.train.epochs == 20
        assert sum(s.epochs for s in cfgs["PPL progressive"].ppl.stages) == 20  # PPL trains as many steps as the baseline


def test_bench_file_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bench.yaml"
    for text, match in [("out: x\nseeds: [0]\n", r"bench.yaml: unknown key\(s\) \['seeds'\]"),
                        ("overrides: [train.epochs]\n", r"bench.yaml: overrides: a list of KEY=VALUE"),
                        ("arm_overrides: {GSML: [gslm.beta=3]}\n", r"bench.yaml: arm_overrides: unknown arm\(s\) \['GSML'\]"),
                        ("- a\n", "bench.yaml: top level must be a mapping")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_bench_file(bad)
    with pytest.raises(ConfigError, match="bench file not found"):
        load_bench_file(tmp_path / "missing.yaml")


def test_gslm_runs_start_from_the_baseline_run_of_their_seed(tmp_path):
    """GSLM's GLM is the baseline network: its runs take the baseline run's weights untrained
    further, after every other override; an arm's own overrides come after the bench's."""
    b = Bench(out=tmp_path, overrides=["train.epochs=20"], arm_overrides={"GSLM": ["gslm.epochs=20"]})
    base = tmp_path / "baseline_cam" / "seed1"
    assert arm_overrides(b, "GSLM", base) == ["train.epochs=20", "gslm.epochs=20", "train.epochs=0",
                                              f"train.init_checkpoint={base / 'checkpoints' / 'final.pth'}"]
    assert arm_overrides(b, BASELINE, base) == ["cam.split=train", "pseudo.split=train", "train.epochs=20"]
    assert arm_overrides(b, "GSLM", None)[-1] == "gslm.epochs=20"  # no baseline run there: GSLM trains its GLM
    assert "train.epochs=0" not in arm_overrides(Bench(out=tmp_path, reuse_glm=False), "GSLM", base)
    assert "train.epochs=0" not in arm_overrides(Bench(out=tmp_path, arms={"GSLM": ARMS["GSLM"]}), "GSLM", base)


def test_shifted_targets_are_the_rolled_ground_truth(tiny_root, tmp_path):
    from wsss.fileio import read_mask

    out = write_shifted_masks(tiny_root, tmp_path / "shifted")
    gts = sorted((tiny_root / "SegmentationClassAug").glob("*.png"))
    assert len(list(out.glob("*.png"))) == len(gts)
    for p in gts[:5]:
        m = read_mask(p)
        assert np.array_equal(read_mask(out / p.name), np.roll(m, m.shape[1] // 2, axis=1))


def test_part_reliance_tells_a_part_detector_from_a_shortcut(tiny_root, tmp_path):
    """The diagnostic on hand-built classifiers: one that scores a class by how many pixels
    carry its part colour loses the class when the part is erased (recognised by its part);
    one whose scores ignore the image keeps them (every class 'recognised without its part').
    Then the script runs end to end on a CAM network's checkpoint and writes its metrics."""
    import json

    import torch

    from conftest import CONFIGS, run_script_here, tiny_overrides
    from tools.part_reliance import erase_part, measure_part_reliance
    from wsss.data.synthetic import class_styles, generate_synthetic_voc
    from wsss.fileio import read_image, read_mask

    layout_img = read_image(tiny_root / "JPEGImages" / "2007_000000.jpg")
    label = read_mask(tiny_root / "SegmentationClassAug" / "2007_000000.png")
    parts = read_mask(tiny_root / "PartMasks" / "2007_000000.png")
    c = int(parts.max())
    erased = erase_part(layout_img, label, parts, c)
    body = (label == c) & (parts != c)
    assert (erased[parts != c] == layout_img[parts != c]).all()
    assert np.abs(erased[parts == c].astype(float) - layout_img[body].mean(0)).max() <= 0.5

    # parts in one hue each (light and dark shades): a pixel shows class c's part when its
    # chroma points the way c's colour does and is strong (the clutter is dull, the body orange)
    hued = tmp_path / "one_hue" / "VOC2012"
    generate_synthetic_voc(hued, seed=3, image_size=64, num_train=12, num_aug=0, num_val=2, num_test=1, num_classes=3,
                           part_colours="one_hue")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    colours = torch.tensor([st.part_a for st in class_styles(3, "one_hue")], dtype=torch.float32) / 255
    ref = colours - colours.mean(1, keepdim=True)

    class PartDetector(torch.nn.Module):
        def forward(self, x):
            img = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
            v = img - img.mean(1, keepdim=True)
            cos = torch.einsum("bchw,kc->bkhw", v, ref) / (v.norm(dim=1, keepdim=True) * ref.norm(dim=1).view(1, -1, 1, 1) + 1e-6)
            hit = (cos > 0.97) & (v.norm(dim=1, keepdim=True) > 0.22)
            return {"logits": 2000 * hit.float().mean((2, 3)) - 4}

    class Blind(torch.nn.Module):
        def forward(self, x):
            return {"logits": torch.ones(x.shape[0], 3) * torch.tensor([1.0, 0.0, 2.0])}

    names = ["aeroplane", "bicycle", "bird"]
    cpu = torch.device("cpu")
    seeing = measure_part_reliance(PartDetector(), str(hued), "train", 3, mean, std, cpu, names)
    assert seeing["recognised_without_part"] == [], seeing
    for m in seeing["per_class"].values():
        assert m["images"] > 0 and m["with_part"] > 0.8 and m["part_erased"] < 0.2 and m["absent"] < 0.2, m
    blind = measure_part_reliance(Blind(), str(hued), "train", 3, mean, std, cpu, names)
    assert blind["recognised_without_part"] == names

    work = tmp_path / "run"
    config = str(CONFIGS / "cam/cam_r18_synthetic.yaml")
    run_script_here("train_cam.py", "--config", config, *tiny_overrides(tiny_root, work, **{"train.epochs": 1}), check=True)
    run_script_here("part_reliance.py", "--config", config, *tiny_overrides(tiny_root, work), check=True)
    out = json.loads((work / "metrics" / "part_reliance.json").read_text())
    assert set(out["per_class"]) == set(names) and out["num_images"] == 12
    assert all(0 <= m["with_part"] <= 1 for m in out["per_class"].values())


@pytest.mark.parametrize("argv", [["train.epochs=3", "--arms", BASELINE, "--heldout-arms"],
                                  # an override after a list option is still an override, not a name
                                  ["--arms", BASELINE, "train.epochs=3", "--heldout-arms"],
                                  ["--heldout-arms", "--arms", BASELINE, "--controls", "untrained network", "train.epochs=3"]])
def test_compare_methods_reads_its_bench_file(tmp_path, argv):
    """The script end to end without a run (--collect-only): the default bench file's overrides
    reach the record, the command line's come after them, and every run not made is listed."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_methods.py"), "--out", str(out), "--collect-only", *argv],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((out / "bench.json").read_text())
    assert rec["bench_file"] == DEFAULT_BENCH_FILE
    assert rec["overrides"] == [*load_bench_file(REPO / DEFAULT_BENCH_FILE)["overrides"], "train.epochs=3"]
    assert rec["not_run"] == [f"{BASELINE} seed {s}" for s in (0, 1, 2)] + ["control: untrained network"]
    assert "configs/bench/decoys.yaml" in (out / "bench.md").read_text()


def test_control_checks_compare_like_with_like():
    """Each control's check against the run it is about: the ground-truth targets against the
    GLM and sr_weight 0, the shifted ones against sr_weight 0, PPL's full-path CAM against the
    concatenated CAM of the same seed's weights."""
    from tools.compare import control_checks

    controls = [{"name": "GSLM, ground-truth SR targets", "cam_miou": 0.60, "gslm_rounds": [{"cam_miou_best": 0.45}]},
                {"name": "GSLM, sr_weight 0", "cam_miou": 0.46},
                {"name": "GSLM, shifted ground-truth SR targets", "cam_miou": 0.36},
                {"name": "PPL progressive, cam_source full", "cam_miou": 0.46}]
    runs = {"PPL progressive": [{"seed": 0, "cam_miou": 0.44}, {"seed": 1, "cam_miou": 0.50}]}
    c = control_checks(runs, controls, seed=0)
    assert c["gt_targets_raise_cam_miou_by_5"] and c["gt_targets_gain_over_glm"] == pytest.approx(0.15)
    assert c["gt_targets_beat_sr_weight_0"] and c["shifted_targets_no_gain_over_sr_weight_0"]
    assert c["ppl_full_path_cam_minus_concat"] == pytest.approx(0.02)
    assert control_checks(runs, controls, seed=1)["ppl_full_path_cam_minus_concat"] == pytest.approx(-0.04)
    assert "ppl_full_path_cam_minus_concat" not in control_checks({}, controls)


def test_shuffled_targets_come_from_another_image_with_this_images_classes(tiny_root, tmp_path):
    """The shuffled-targets control: every training image gets another image's ground truth (no
    image its own), at its own size, its foreground renamed to its own classes; val keeps its own."""
    from tools.graded import write_shuffled_masks
    from wsss.data.voc import VOCLayout
    from wsss.fileio import read_mask

    out = write_shuffled_masks(tiny_root, tmp_path / "shuffled")
    L = VOCLayout(tiny_root)
    ids = L.read_split("train_aug")
    gts = {i: read_mask(L.mask(i, "SegmentationClassAug")) for i in ids}
    same = 0
    for i in ids:
        m = read_mask(out / f"{i}.png")
        own = gts[i]
        assert m.shape == own.shape
        assert set(np.unique(m)) - {0, 255} <= set(np.unique(own)) - {0, 255}  # this image's classes only
        donors = [j for j in ids if j != i and gts[j].shape == m.shape and np.array_equal(gts[j] > 0, m > 0)]
        assert donors, i  # the foreground is another image's
        same += int(np.array_equal(m > 0, own > 0))
    assert same == 0
    for i in L.read_split("val"):
        assert np.array_equal(read_mask(out / f"{i}.png"), read_mask(L.mask(i, "SegmentationClassAug")))
    assert write_shuffled_masks(tiny_root, tmp_path / "shuffled") == out  # made once


def test_part_gate_between_chance_and_the_part():
    from tools.graded import part_gate

    rel = {"per_class": {"a": {"images": 9, "with_part": 0.95, "part_erased": 0.40, "absent": 0.05},  # the body helps, the part names it
                         "b": {"images": 9, "with_part": 0.95, "part_erased": 0.03, "absent": 0.06},  # no body signal: fine
                         "c": {"images": 9, "with_part": 0.64, "part_erased": 0.62, "absent": 0.20},  # part not learnt
                         "d": {"images": 0, "with_part": None, "part_erased": None, "absent": 0.1}}}
    g = part_gate(rel)
    assert [g["per_class"][c]["ok"] for c in "abcd"] == [True, True, False, False] and not g["ok"]


def _level(signal, gains, controls=None, base_std=0.005, n=3):
    ms = lambda v: {"mean": v[0], "std": v[1], "n": n}  # noqa: E731
    return {"signal": signal, "arms": {BASELINE: {"splits": {"val": {"cam_miou": {"mean": 0.45, "std": base_std, "n": n}}}, "gains": {}},
                                       "GSLM": {"gains": {"val:cam_miou": ms(gains), "train:reference": ms(gains),
                                                          "train:pseudo_miou_255_as_bg": ms(gains),
                                                          "train:pseudo_miou_confident": ms(gains)}}},
            "controls": {name: {"gains": {"val:cam_miou": v}} for name, v in (controls or {}).items()}}


def test_dose_response_needs_a_slope_beyond_noise_and_flat_broken_controls():
    from tools.graded import dose_response

    flat = dose_response([_level(0.0, (0.01, 0.005)), _level(0.5, (0.012, 0.005)), _level(1.0, (0.011, 0.005))])
    assert not flat["GSLM"]["works"] and "does not grow" in flat["GSLM"]["why"]
    rising = [_level(0.0, (0.0, 0.005), {"GSLM, sr_weight 0": 0.0}), _level(0.5, (0.02, 0.005), {"GSLM, sr_weight 0": 0.001}),
              _level(1.0, (0.05, 0.005), {"GSLM, sr_weight 0": 0.002})]
    v = dose_response(rising)["GSLM"]
    assert v["works"] and v["measures"]["val:cam_miou"]["difference"] == pytest.approx(0.05)
    assert v["measures"]["val:cam_miou"]["noise"] == pytest.approx(2 * np.sqrt(2) * 0.005)
    # a broken control that rises as much: the slope is not the method's
    for lv, g in zip(rising, (0.0, 0.02, 0.04)):
        lv["controls"]["GSLM, shuffled ground-truth SR targets"] = {"gains": {"val:cam_miou": g}}
    v = dose_response(rising)["GSLM"]
    assert not v["works"] and "shuffled" in v["why"]
    # noisy seeds: the same rise within twice the noise is no slope
    noisy = [_level(0.0, (0.0, 0.03)), _level(1.0, (0.05, 0.03))]
    assert not dose_response(noisy)["GSLM"]["works"]
    # one level: no verdict either way
    one = dose_response([_level(0.0, (0.0, 0.005))])["GSLM"]
    assert one["works"] is None and "fewer than two levels" in one["why"]


@pytest.mark.parametrize("n", [1, 2])
def test_dose_response_calls_nothing_before_three_seeds(n):
    """A bench part-way through (one or two seeds per arm and level) shows its slopes but calls
    none of them: one seed's std is 0, which would make any difference 'beyond the noise'."""
    from tools.graded import dose_response
    from tools.published import _slope_cells

    base_std = 0.0 if n == 1 else 0.005
    rising = [_level(0.0, (0.0, base_std), {"GSLM, sr_weight 0": 0.0}, base_std, n),
              _level(1.0, (0.05, base_std), {"GSLM, sr_weight 0": 0.03}, base_std, n)]
    v = dose_response(rising)["GSLM"]
    assert v["works"] is None and f"{n} paired training seed" in v["why"]
    s = v["measures"]["val:cam_miou"]
    assert s["grows"] is None and s["difference"] == pytest.approx(0.05)
    assert v["broken_controls"]["GSLM, sr_weight 0"]["grows"] is None
    cells = _slope_cells(s)
    assert cells[-1] == f"not called ({n} seed{'s' if n > 1 else ''})" and (cells[3] == "-") == (n == 1)
    # the third seed makes the call
    assert dose_response([_level(0.0, (0.0, 0.005)), _level(1.0, (0.05, 0.005))])["GSLM"]["works"]


def test_a_level_whose_gates_fail_is_kept_out_of_the_verdict():
    """A level that breaks the premise on a baseline run is shown, not counted: the rising gain
    it would add does not make a verdict."""
    from tools import graded

    def summary(name, over, d):
        lv = _level(d["signal"], d["gain"])
        return {**lv, "level": name, "gates": {"ok": d["ok"]}}

    levels = {"q1.00": ([], {"signal": 0.0, "gain": (0.0, 0.005), "ok": True}),
              "q0.50": ([], {"signal": 0.5, "gain": (0.002, 0.005), "ok": True}),
              "q0.25": ([], {"signal": 0.75, "gain": (0.05, 0.005), "ok": False})}
    orig = graded.level_summary
    graded.level_summary = summary
    try:
        out = graded.graded_summary(levels)
    finally:
        graded.level_summary = orig
    assert out["levels_out_of_the_verdict"] == ["q0.25"] and len(out["levels"]) == 3
    assert not out["verdict"]["GSLM"]["works"]
    levels["q0.25"][1]["ok"] = True
    graded.level_summary = summary
    try:
        assert graded.graded_summary(levels)["verdict"]["GSLM"]["works"]
    finally:
        graded.level_summary = orig


def test_graded_bench_file_levels_and_names(tmp_path):
    """The graded bench file: its levels set shared_body (1.0 the negative control) and a data
    root each; its arms and controls are known names; every level's run configs resolve."""
    from tools.compare import CONTROLS
    from tools.graded import level_signal

    bench = load_bench_file(REPO / "configs" / "bench" / "graded.yaml")
    assert [level_signal(v) for v in bench["levels"].values()] == [0.0, 0.25, 0.5, 0.75]
    roots = {next(o for o in v if o.startswith("data.root=")) for v in bench["levels"].values()}
    assert len(roots) == len(bench["levels"])
    assert set(bench["controls"]) <= {c.name for c in CONTROLS} and set(bench["arms"]) <= set(ARMS)
    for name, over in bench["levels"].items():
        b = Bench(out=tmp_path, overrides=[*bench["overrides"], *over], arm_overrides=bench["arm_overrides"])
        for arm in bench["arms"]:
            cfg = load_config(str(REPO / ARMS[arm]), arm_overrides(b, arm, None))
            assert cfg.data.synthetic.shared_body == 1.0 - level_signal(over)
        assert cfg.data.synthetic.supersample == 4
    gslm = load_config(str(REPO / ARMS["GSLM"]), arm_overrides(b, "GSLM", None))
    # the SLM rule: lr x steps per round = 2% of the GLM's (VOC's proportion), 3 rounds
    assert gslm.gslm.rounds == 3 and gslm.gslm.lr * gslm.gslm.epochs == pytest.approx(0.02 * gslm.train.lr * gslm.train.epochs)
    bad = tmp_path / "b.yaml"
    for text, match in [("levels: [a]\n", "levels: a mapping"), ("levels: {a: [x]}\n", r"levels.a: a list of KEY=VALUE"),
                        ("controls: [nope]\n", r"controls: unknown name\(s\) \['nope'\]"), ("arms: [GSML]\n", r"arms: unknown name")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_bench_file(bad)


@pytest.mark.parametrize("seeds, share", [((0,), None), ((0, 1, 2), 0.5)])
def test_ground_truth_gap_share_waits_for_the_baselines_noise(seeds, share):
    """The share of the ground-truth control's gap an arm closes is computed only where the gap
    is known to exceed twice the baseline's seed noise: one baseline seed has a std of 0."""
    from tools import graded

    def scores(cam):
        split = {m: 0.4 for m in graded.METRICS} | {"cam_miou": cam}
        return {"models": [{"name": "final", "train": split, "val": split}]}

    d = {"runs": {BASELINE: [{"seed": s, "scores": scores(0.450 + 0.001 * s)} for s in seeds],
                  "GSLM": [{"seed": s, "scores": scores(0.455 + 0.001 * s)} for s in seeds]},
         "controls": [{"name": graded.GT_CONTROL, "arm": "GSLM", "scores": scores(0.460)}], "ref_seed": 0}
    lv = graded.level_summary("q1.00", ["data.synthetic.shared_body=1.0"], d)
    assert lv["gt_gap"] == pytest.approx(0.010) and lv["gt_gap_beyond_noise"] == (share is not None)
    got = lv["arms"]["GSLM"]["gt_gap_share"]
    assert got is None if share is None else got == pytest.approx(share)
