"""The pipeline's stages: one row of :data:`STAGES` each, and the function that runs one.

A row says what a stage is: its work (``body``), the config keys that can change what it
makes, the records of what it reads, what it leaves in the work_dir, and the numbers the
summary quotes. :func:`run` does what every stage does around its work, in this order:

    the work_dir lock (wsss.lock) -> device, threads, seed (wsss.engine) -> the data (made
    when a synthetic config needs it) -> what it reads and would write over, checked
    (wsss.records.begin) -> config.yaml -> its work, its metrics files carrying its
    record -> for training, its record settled

so a refused run changes nothing. Adding a stage is its body and one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wsss import layout, records
from wsss.config import Config, save_config
from wsss.engine.distributed import barrier, is_main
from wsss.layout import Outputs
from wsss.records import METHODS
from wsss.registry import resolve
from wsss.reports import recording


@dataclass(frozen=True)
class Stage:
    name: str
    # its work: "module:function" of (cfg, device, redo, **options) -> its result (its numbers
    # printed and saved), imported when the stage runs
    body: str
    keys: Callable[[Config], list[str]]  # dotted prefixes of the keys that can change its output
    outputs: Outputs  # what it leaves in the work_dir (a folder with a record: a producing stage)
    excludes: tuple[str, ...] = ()  # ... but these
    # the records of what it reads (checked on the way): a function, or "module:function"
    inputs: Callable[[Config], dict] | str | None = None
    numbers: Callable[[dict], dict] = lambda result: {}  # the figures run_pipeline's summary quotes
    what: str = "outputs"  # its outputs, in a message
    redo_key: str = ""  # the config key that asks to make its outputs again
    redo_hint: str = ""  # the way out of a stale output, in a message
    training: bool = False  # a redo starts over
    phases: str = ""  # training: "module:function" of cfg -> its phases (their batches are checked first)
    main_only: bool = False  # runs on rank 0 under torchrun (the others wait)
    also_on_stale: Callable[[Config], str] | None = None  # a third way out when an input is stale

    def key_patterns(self, cfg: Config) -> list[str]:
        return list(self.keys(cfg))

    @property
    def evaluation(self) -> bool:
        return self.outputs.folder is None


def run(cfg: Config, name: str, redo: bool | None = None, **options: Any) -> dict:
    """Run stage ``name`` on ``cfg`` (see the module's docstring); ``redo``: make its outputs
    again (default: its ``redo_key``)."""
    from wsss.data.synthetic import ensure_data
    from wsss.engine.trainer import setup_runtime
    from wsss.lock import claim

    stage = STAGES[name]
    if redo is None:
        redo = bool(_get(cfg, stage.redo_key)) if stage.redo_key else False
    claim(cfg.work_dir)
    device = setup_runtime(cfg, autotune=stage.training)
    check_batches(cfg, [name])
    ensure_data(cfg)
    record = records.begin(cfg, stage, redo)
    if is_main():
        save_config(cfg)
    if stage.main_only and not is_main():
        barrier()
        return {}
    with recording(record):
        result = resolve(stage.body)(cfg, device, redo, **options) or {}
    if stage.training:
        records.settle(cfg, stage)
    if stage.main_only:
        barrier()
    return result


def check_batches(cfg: Config, names: list[str]) -> None:
    """Every training phase of these stages splits its batch evenly over this job's ranks
    (a ConfigError naming the key, before anything is computed)."""
    from wsss.engine.distributed import get_world_size
    from wsss.engine.trainer import check_batch

    world = get_world_size()
    for name in names:
        if STAGES[name].phases and world > 1:
            for phase in resolve(STAGES[name].phases)(cfg):
                check_batch(phase, world)


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def visualize(cfg: Config, n: int | None = None, ids: list[str] | None = None) -> list[str]:
    """Panels of whatever CAMs and masks are there (pictures, no numbers: nothing is checked)."""
    from wsss.lock import claim
    from wsss.visualize import write_panels

    claim(cfg.work_dir)
    if not is_main():
        return []
    return write_panels(cfg, n=n, ids=ids)


# --------------------------------------------------------------------------
# what each stage reads
# --------------------------------------------------------------------------
def _mask_folder(cfg: Config, mask_dir: str) -> Path:
    p = Path(mask_dir)
    if not p.is_absolute() and len(p.parts) == 1:  # a bare name lies under data.root (VOCLayout.mask)
        p = Path(cfg.data.root) / p
    return p


def _train_seg_also(cfg: Config) -> str:
    # DeepLab is often trained with its own config on another experiment's masks
    return f"or, to train on these masks as they are, use seg.mask_dir={cfg.seg.mask_dir} with another work_dir=DIR"


def _train_cam_keys(cfg: Config) -> list[str]:
    keys = ["seed", "data", "model", "train", "runtime.amp", "runtime.sync_bn", METHODS]
    if records.has_extra_phases(cfg):
        # a method's extra phases (GSLM's rounds) make CAMs and pseudo masks and score them while training
        for s in ("make_cam", "make_pseudo", "eval_cam", "eval_pseudo"):
            keys += [k for k in STAGES[s].key_patterns(cfg) if k not in keys]
    return keys


def _eval_cam_numbers(r: dict) -> dict:
    out = {"cam_miou": r["miou"], "cam_best_threshold": r["best_threshold"]}
    if r.get("crf"):
        out.update({"cam_crf_miou": r["crf"]["miou"], "cam_crf_threshold": r["crf"]["threshold"]})
    return out


# the random walk's settings: keys of make_irn_labels, not of the boundary network's training
IRN_WALK_KEYS = ("irn.walk_radius", "irn.beta", "irn.exp_times", "irn.bg_thres", "irn.infer_canvas", "irn.boundary")
SEG_EVAL_KEYS = ("seg.val_split", "seg.test_split", "seg.scales", "seg.flip", "seg.crf", "seg.crf_params")


def _method_metrics(cfg: Config) -> list[str]:
    return [f"{s}_*" for s in records.method_sections(cfg)]


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("train_cam", "wsss.cam.training:train_cam_stage", _train_cam_keys,
          Outputs(folder=layout.cam_checkpoints, files="*.pth", whole=True,
                  dirs=lambda cfg: [layout.method_dir(cfg, s) for s in records.method_sections(cfg)],
                  logs=lambda cfg: [layout.tensorboard(cfg, "tb")],
                  metrics=lambda cfg: ["train_cam_*", *_method_metrics(cfg)]),
          what="checkpoints", redo_hint="redo it with train_cam.py --no-resume", training=True,
          phases="wsss.cam.training:cam_phases"),
    Stage("make_cam", "wsss.cam.make:make_cam_stage",
          lambda cfg: ["model", "cam", "train.aug.mean", "train.aug.std", "runtime.amp", METHODS],
          Outputs(folder=lambda cfg: Path(cfg.cam.out_dir), files="*.npz", metrics=lambda cfg: ["make_cam.*"]),
          excludes=("model.weights",), inputs="wsss.cam.make:cam_weights_input",
          what="CAMs", redo_key="cam.redo", redo_hint="set cam.redo=true to make them again"),
    Stage("eval_cam", "wsss.cam.evaluate:eval_cam_stage", lambda cfg: ["data", "eval_cam", "pseudo.crf_params"],
          Outputs(metrics=lambda cfg: ["cam_eval.*"]),
          inputs=lambda cfg: {"cams": records.folder_input(cfg, cfg.eval_cam.cam_dir, STAGES["make_cam"])},
          numbers=_eval_cam_numbers, main_only=True),
    Stage("make_pseudo", "wsss.pseudo.make:make_pseudo_stage", lambda cfg: ["data", "pseudo"],
          Outputs(folder=lambda cfg: Path(cfg.pseudo.out_dir), files="*.png", metrics=lambda cfg: ["make_pseudo.*"]),
          excludes=("pseudo.eval_split",),
          inputs=lambda cfg: {"cams": records.folder_input(cfg, cfg.pseudo.cam_dir, STAGES["make_cam"])},
          what="pseudo masks", redo_key="pseudo.redo", redo_hint="set pseudo.redo=true to make them again"),
    Stage("eval_pseudo", "wsss.pseudo.make:eval_pseudo_stage", lambda cfg: ["data", "pseudo.eval_split"],
          Outputs(metrics=lambda cfg: ["pseudo_eval.*"]),
          inputs=lambda cfg: {"pseudo": records.folder_input(cfg, cfg.pseudo.out_dir, STAGES["make_pseudo"])},
          numbers=lambda r: {"pseudo_miou_255_as_bg": r["miou_255_as_background"],
                             "pseudo_miou_confident": r["miou_confident_pixels"],
                             "pseudo_confident_fraction": r["confident_fraction"]} if r else {},
          main_only=True),
    Stage("train_irn", "wsss.irn.training:train_irn_stage",
          lambda cfg: ["seed", "data", "irn", "train.max_steps", "runtime.amp", "runtime.sync_bn"],
          Outputs(folder=layout.irn_checkpoints, files="*.pth", whole=True,
                  logs=lambda cfg: [layout.tensorboard(cfg, "tb_irn")], metrics=lambda cfg: ["train_irn_*"]),
          excludes=(*IRN_WALK_KEYS, "irn.eval_split"),
          inputs=lambda cfg: {"masks": records.folder_input(cfg, _mask_folder(cfg, cfg.irn.mask_dir), STAGES["make_pseudo"])},
          what="IRN checkpoints", redo_hint="redo it with train_irn.py --no-resume", training=True,
          phases="wsss.irn.training:irn_phases"),
    Stage("make_irn_labels", "wsss.irn.training:make_irn_labels_stage",
          lambda cfg: ["data", "irn.backbone", *IRN_WALK_KEYS, "irn.aug.mean", "irn.aug.std", "runtime.amp"],
          Outputs(folder=layout.irn_labels, files="*.png", metrics=lambda cfg: ["make_irn_labels.*"]),
          inputs=lambda cfg: {"cams": records.folder_input(cfg, cfg.irn.cam_dir, STAGES["make_cam"]),
                              "boundary": records.file_input(cfg, cfg.irn.checkpoint, STAGES["train_irn"])},
          what="IRN labels", redo_key="irn.redo", redo_hint="set irn.redo=true to make them again"),
    Stage("eval_irn", "wsss.irn.training:eval_irn_stage", lambda cfg: ["data", "irn.eval_split"],
          Outputs(metrics=lambda cfg: ["irn_eval.*"]),
          inputs=lambda cfg: {"labels": records.folder_input(cfg, layout.irn_labels(cfg), STAGES["make_irn_labels"])},
          numbers=lambda r: {"irn_miou": r["miou_255_as_background"]} if r else {}, main_only=True),
    Stage("train_seg", "wsss.seg.training:train_seg_stage", lambda cfg: ["seed", "data", "seg", "train.max_steps", "runtime.amp", "runtime.sync_bn"],
          Outputs(folder=layout.seg_checkpoints, files="*.pth", whole=True,
                  logs=lambda cfg: [layout.tensorboard(cfg, "tb_seg")], metrics=lambda cfg: ["train_seg_*"]),
          excludes=SEG_EVAL_KEYS,
          inputs=lambda cfg: {"masks": records.folder_input(cfg, _mask_folder(cfg, cfg.seg.mask_dir), STAGES["make_pseudo"],
                                                            STAGES["make_irn_labels"])},
          what="DeepLab checkpoints", redo_hint="redo it with train_seg.py --no-resume", training=True,
          phases="wsss.seg.training:seg_phases",
          also_on_stale=_train_seg_also),
    Stage("eval_seg", "wsss.seg.evaluate:eval_seg_stage", lambda cfg: ["data", *SEG_EVAL_KEYS, "seg.aug.mean", "seg.aug.std"],
          Outputs(dirs=lambda cfg: [layout.seg_predictions(cfg), Path(cfg.seg.out_dir) / "results"],
                  metrics=lambda cfg: ["seg_eval.*"]),
          inputs=lambda cfg: {"seg": records.file_input(cfg, cfg.seg.checkpoint, STAGES["train_seg"])},
          numbers=lambda r: {"seg_miou": r.get("miou")} if r else {}, main_only=True),
]}
