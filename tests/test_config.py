from pathlib import Path

import pytest
import yaml

from conftest import experiment_configs
from wsss.config import ConfigError, config_from_dict, load_config, save_config, to_dict


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_base_merge_order_levels_and_relative_paths(tmp_path):
    write(tmp_path / "bases/a.yaml", {"data": {"root": "/a", "num_classes": 3}, "train": {"lr": 0.1, "epochs": 1}})
    write(tmp_path / "bases/b.yaml", {"_base_": "a.yaml", "train": {"lr": 0.2}, "model": {"backbone": "resnet18"}})
    write(tmp_path / "bases/c.yaml", {"train": {"epochs": 7}, "cam": {"scales": [1.0]}})
    cfg_path = write(tmp_path / "exp/my_exp.yaml", {"_base_": ["../bases/b.yaml", "../bases/c.yaml"],
                                                    "train": {"batch_size": 4}, "cam": {"scales": [1.0, 2.0]}})
    cfg = load_config(cfg_path)
    assert cfg.data.root == "/a" and cfg.data.num_classes == 3  # from two levels down
    assert cfg.train.lr == 0.2  # b overrides a
    assert cfg.train.epochs == 7  # c (later base) overrides b's base
    assert cfg.train.batch_size == 4  # the file's own key
    assert cfg.cam.scales == [1.0, 2.0]  # lists replace, not merge
    assert cfg.model.backbone == "resnet18"
    assert cfg.train.momentum == 0.0  # a declared default
    assert cfg.exp_name == "my_exp" and cfg.work_dir == str(Path("work_dirs") / "my_exp")


def test_cli_overrides_win_and_parse_yaml_values(tmp_path):
    p = write(tmp_path / "x.yaml", {"data": {"root": "/a"}, "train": {"lr": 0.1}})
    cfg = load_config(p, ["train.lr=0.01", "cam.scales=[1.0,0.5]", "runtime.deterministic=true", "work_dir=/tmp/w",
                          "train.aug.crop_size=64"])
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.cam.scales == [1.0, 0.5]
    assert cfg.runtime.deterministic is True
    assert cfg.work_dir == "/tmp/w"
    assert cfg.train.aug.crop_size == 64
    assert cfg.cam.out_dir == "/tmp/w/cams"  # derived paths follow work_dir


def test_int_is_accepted_for_float(tmp_path):
    p = write(tmp_path / "x.yaml", {"data": {"root": "/a"}, "train": {"lr": 1}})
    assert load_config(p).train.lr == 1.0


@pytest.mark.parametrize("data,overrides,pattern", [
    ({"data": {"root": "/a"}, "train": {"lrr": 0.1}}, [], r"unknown key 'train.lrr' \(from .*x.yaml\)"),
    ({"data": {"root": "/a"}}, ["train.lrr=1"], r"unknown key 'train.lrr' \(from the command line\)"),
    ({"data": {"root": "/a"}, "train": {"lr": "fast"}}, [], r"train.lr: expected float, got str 'fast' \(from .*x.yaml\)"),
    ({"data": {"root": "/a"}}, ["train.epochs=1.5"], r"train.epochs: expected int, got float 1.5 \(from the command line\)"),
    ({"data": {"root": "/a"}, "runtime": {"amp": "fp8"}}, [], r"runtime.amp: expected 'none' \| 'bf16' \| 'fp16'"),
    ({"data": {"root": "/a"}, "cam": {"scales": [1.0, "x"]}}, [], r"cam.scales\[1\]: expected float"),
    ({"data": {"root": "/a"}, "train": 3}, [], r"train: expected mapping"),
    ({"train": {"lr": 0.1}}, [], r"missing required key 'data.root'"),
])
def test_errors_name_key_and_file(tmp_path, data, overrides, pattern):
    p = write(tmp_path / "x.yaml", data)
    with pytest.raises(ConfigError, match=pattern):
        load_config(p, overrides)


def test_missing_base_names_file_and_referrer(tmp_path):
    p = write(tmp_path / "x.yaml", {"_base_": "nope.yaml", "data": {"root": "/a"}})
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml \(named in _base_ of .*x.yaml\)"):
        load_config(p)


def test_circular_base(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match=r"circular _base_: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(tmp_path / "a.yaml")


def test_invalid_yaml_and_bad_override(tmp_path):
    p = write(tmp_path / "x.yaml", "data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"x.yaml: not valid YAML"):
        load_config(p)
    q = write(tmp_path / "y.yaml", {"data": {"root": "/a"}})
    with pytest.raises(ConfigError, match=r"not of the form key=value"):
        load_config(q, ["train.lr"])


def test_registered_sections_are_validated(tmp_path):
    p = write(tmp_path / "x.yaml", {"data": {"root": "/a"}, "seg": {"iterations": 5, "bogus": 1}})
    with pytest.raises(ConfigError, match=r"unknown key 'seg.bogus'"):
        load_config(p)
    p2 = write(tmp_path / "z.yaml", {"data": {"root": "/a"}, "seg": {"iterations": 5}})
    cfg = load_config(p2)
    assert cfg.seg.iterations == 5 and cfg.seg.lr == 2.5e-4


def test_resolved_config_round_trip(tmp_path):
    p = write(tmp_path / "x.yaml", {"data": {"root": "/a"}, "train": {"lr": 0.3}, "work_dir": str(tmp_path / "w")})
    cfg = load_config(p, ["seg.iterations=7"])
    out = save_config(cfg)
    assert out == tmp_path / "w" / "config.yaml"
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)
    assert to_dict(config_from_dict(to_dict(cfg))) == to_dict(cfg)


def test_shipped_configs_all_load():
    files = experiment_configs()
    assert files
    for f in files:
        load_config(f)


def test_voc_and_coco_configs_run_irn_with_the_reference_recipe():
    """Every VOC/COCO experiment goes CAM -> pseudo masks -> IRN -> DeepLab on IRN's labels,
    with IRN's recipe (GSLM's configs: its batch of 16); the synthetic ones train DeepLab on
    the pseudo masks (docs/irn.md)."""
    from conftest import experiment_configs

    real = [f for f in experiment_configs() if "_voc12" in f.name or "_coco14" in f.name]
    assert len(real) >= 10 and any(f.parent.name == "seg" for f in real)
    for f in real:
        cfg = load_config(f)
        i = cfg.irn
        assert cfg.seg.masks == "irn", f.name
        if f.parent.name == "seg":  # DeepLab alone, on a CAM experiment's work_dir
            continue
        assert cfg.cam.save_strided, f.name
        assert (i.backbone, i.weights, i.epochs, i.lr, i.weight_decay, i.radius) == ("resnet50", "IMAGENET1K_V1", 3, 0.1, 1e-4, 10), f.name
        assert (i.walk_radius, i.beta, i.exp_times, i.bg_thres, i.infer_canvas, i.aug.crop_size) == (5, 10.0, 8, 0.25, 512, 512), f.name
        assert i.batch_size == (16 if f.parent.name == "gslm" else 32), f.name
        assert i.mask_dir == cfg.pseudo.out_dir and i.cam_dir == cfg.cam.out_dir, f.name
    for f in experiment_configs():
        if "synthetic" in f.name:
            assert load_config(f).seg.masks == "pseudo", f.name


def test_one_schedule_and_one_crf_schema():
    """Every section that trains is a ScheduleConfig and every CRF a CRFConfig, each field declared once."""
    import dataclasses

    from wsss.config import CRFConfig, ScheduleConfig, SegConfig, TrainConfig
    from wsss.engine.trainer import Schedule
    from gslm.config import GSLMConfig

    sched = {f.name for f in dataclasses.fields(ScheduleConfig)}
    for cls in (TrainConfig, SegConfig, GSLMConfig, Schedule):
        assert issubclass(cls, ScheduleConfig), cls
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/gslm/gslm_r18_synthetic.yaml")
    assert isinstance(cfg.pseudo.crf_params, CRFConfig) and isinstance(cfg.seg.crf_params, CRFConfig)
    assert cfg.seg.crf_params.bilateral_sxy == 67.0 and cfg.pseudo.crf_params.bilateral_sxy == 50.0
    # a GSLM round: the gslm section's schedule, the train section's loop settings (as before the shared schema)
    g, t = cfg.gslm, cfg.train
    s = Schedule.from_config(g, loop=t, batch_size=g.batch_size or t.batch_size)
    assert {k: getattr(s, k) for k in sched} == {**{k: getattr(g, k) for k in sched}, "batch_size": g.batch_size or t.batch_size}
    assert (s.workers, s.max_steps, s.log_interval, s.ckpt_interval, s.vis_interval) == \
        (t.workers, t.max_steps, t.log_interval, t.ckpt_interval, t.vis_interval)
    assert (g.nesterov, g.poly_power) == (t.nesterov, t.poly_power)  # what the rounds took from train before
    d = Schedule.from_config(cfg.seg, max_steps=3)
    assert (d.iterations, d.lr, d.momentum, d.max_steps, d.workers, d.val_interval) == \
        (cfg.seg.iterations, cfg.seg.lr, cfg.seg.momentum, 3, cfg.seg.workers, cfg.seg.val_interval)


def test_a_renamed_key_is_refused_with_its_new_name(tmp_path):
    """The CRF keys from before crf_params (pseudo.gauss_sxy, seg.crf_iters, ...) are refused
    in one line naming the file, the new key and the way out; nothing reads them silently."""
    p = write(tmp_path / "old.yaml", {"data": {"root": "/a"}, "pseudo": {"gauss_compat": 3.0}})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"pseudo.gauss_compat (from {p}) is now pseudo.crf_params.gauss_compat; set that instead"
    with pytest.raises(ConfigError, match=r"^seg\.crf_iters \(from the command line\) is now seg\.crf_params\.iters"):
        load_config(write(tmp_path / "new.yaml", {"data": {"root": "/a"}}), ["seg.crf_iters=5"])


def test_a_section_keeps_its_own_defaults_for_a_shared_schema(tmp_path):
    """seg.aug and seg.crf_params are the shared AugConfig / CRFConfig with DeepLab's defaults:
    absent, or given in part, the keys not given keep DeepLab's values, not the schema's."""
    from wsss.config import SegConfig

    own = SegConfig()
    p = write(tmp_path / "x.yaml", {"data": {"root": "/a"}})
    cfg = load_config(p)
    assert to_dict(cfg.seg.aug) == to_dict(own.aug) and to_dict(cfg.seg.crf_params) == to_dict(own.crf_params)
    assert cfg.seg.aug.crop_size == 321 and cfg.seg.crf_params.bilateral_sxy == 67.0 and cfg.train.aug.crop_size == 512
    part = load_config(p, ["seg.aug.crop_size=300", "seg.crf_params.iters=3"])
    assert part.seg.aug.crop_size == 300 and part.seg.aug.scale_range == own.aug.scale_range
    assert part.seg.crf_params.iters == 3 and part.seg.crf_params.gauss_sxy == own.crf_params.gauss_sxy


def test_method_sections_only_in_configs_that_use_them():
    """A baseline config carries no ppl: or gslm: keys; a config that sets the section, or whose
    model is a PPL model, has it; a record made when baseline configs still carried them
    compares equal (a section the config no longer has is no change)."""
    from ppl_wsss.config import PPL_MODELS
    from wsss.records import changed, stage_keys
    from wsss.registry import registered_models
    from wsss.stages import STAGES

    configs = Path(__file__).resolve().parents[1] / "configs"
    base = load_config(configs / "cam/cam_r18_synthetic.yaml")
    assert "ppl" not in to_dict(base) and "gslm" not in to_dict(base) and "seg" in to_dict(base)
    with pytest.raises(AttributeError):
        base.gslm
    ppl = load_config(configs / "cam/cam_r18_synthetic.yaml", ["model.name=ppl_explicit"])
    assert ppl.ppl.cam_source == "concat" and "gslm" not in to_dict(ppl)
    assert load_config(configs / "cam/cam_r18_synthetic.yaml", ["gslm.rounds=1"]).gslm.rounds == 1
    assert set(PPL_MODELS) <= set(registered_models())
    both = load_config(configs / "gslm/ppl_gslm_r18_synthetic.yaml")
    assert to_dict(config_from_dict(to_dict(both))) == to_dict(both)
    # train_cam's record of the same baseline, as it was written when every config carried both sections
    with_methods = load_config(configs / "cam/cam_r18_synthetic.yaml", ["gslm.rounds=0", "ppl.cam_source=concat"])
    old = {"stage": "train_cam", "keys": stage_keys(with_methods, STAGES["train_cam"])}
    assert any(k.startswith("gslm.") for k in old["keys"])
    assert changed(old, {"stage": "train_cam", "keys": stage_keys(base, STAGES["train_cam"])}) == []
