"""YAML configs with ``_base_`` inheritance, dotted CLI overrides and a typed schema.

A config file is YAML. It may name other files in ``_base_`` (a string or a
list, paths relative to the file); bases merge first, in list order, and the
file's own keys win. Dicts merge key by key; any other value (lists included)
replaces what was there. Command-line overrides (``train.lr=0.01``) apply last;
their values are parsed as YAML (``cam.scales=[1.0,0.5]``).

Every key is declared in a dataclass: the shared sections below; the other
sections (seg, pipeline, pretrain, the method packages) by the modules that own
them, with :func:`wsss.registry.register_section`, and loading imports those
through the registry. Loading checks every key against the schema: an unknown
key, a value of the wrong type or a required key without a value raises
:class:`ConfigError` naming the key and the file it came from.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from wsss import registry
from wsss.errors import ConfigError
from wsss.fileio import atomic_write_text


MISSING: Any = dataclasses.MISSING
CLI = "the command line"


# --------------------------------------------------------------------------
# Schema of the shared layer
# --------------------------------------------------------------------------
# The ResNet depths every network here is built on (wsss.models.backbones.ARCHS); the one list.
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)


@dataclass
class AugConfig:
    """Geometric and photometric training augmentation (image and mask jointly)."""

    resize_long: list[int] = field(default_factory=lambda: [320, 640])  # [] = off
    scale_range: list[float] = field(default_factory=list)  # [lo, hi] random rescale; [] = off
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    hflip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, 0 = off
    crop_size: int = 512  # 0 = no crop (batches then need equal-sized images)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic mini-VOC, generated when data.root does not exist."""

    seed: int = 0
    image_size: int = 128
    num_train: int = 100  # images with SegmentationClass GT ("train", like VOC's 1,464)
    num_aug: int = 700  # extra images only in train_aug (like SBD)
    num_val: int = 100
    num_test: int = 20
    num_classes: int = 5
    write_coco: bool = False
    # non-square images ([] / false: image_size squares); see wsss.data.synthetic.image_sizes
    width_range: list[int] = field(default_factory=list)  # [lo, hi] inclusive
    height_range: list[int] = field(default_factory=list)
    voc_sizes: bool = False  # roughly VOC 2012's sizes: long side 500, mostly 500x375
    # the scene design (docs/synthetic_bench.md): round bodies with the part anywhere inside, or
    # elongated bodies with the part at one end; parts in two palette colours or one hue in two shades
    scene: Literal["round", "elongated"] = "round"
    part_colours: Literal["pairs", "one_hue"] = "pairs"
    # objects of no class (background in the GT): 0 to this many per image, their parts in
    # hues between the classes' (one_hue only); without them an object whose part the
    # network does not know already names the one class left
    decoys: int = 0


@dataclass
class DataConfig:
    root: str = MISSING  # the VOC2012-style folder (JPEGImages, SegmentationClass, ...)
    dataset: Literal["voc12", "coco14", "synthetic"] = "voc12"
    num_classes: int = 20
    label_file: str = ""  # default: <root>/cls_labels.json
    train_split: str = "train_aug"
    gt_dir: str = "SegmentationClass"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = "cam_net"  # a registered CAM model (see wsss.registry)
    backbone: Backbone = "resnet50"
    weights: str = "IMAGENET1K_V1"  # torchvision weights name, a local file, or "none"
    output_stride: Literal[8, 16, 32] = 16
    # "stride": remove strides without dilation (the IRN/GSLM CAM network);
    # "dilation": torchvision's replace_stride_with_dilation (a different network).
    stride_mode: Literal["stride", "dilation"] = "stride"
    frozen_bn: bool = True  # BN always in eval mode; affine parameters still train
    freeze_stem: bool = True  # conv1/bn1 fully frozen
    detach_stage: int = 2  # no gradient into stages 1..detach_stage (0 = train all)


@dataclass
class ScheduleConfig:
    """One optimisation schedule (SGD, poly decay): the fields every section that trains
    shares (``train``, ``seg``, ``gslm``), declared once; a section states its own recipe's
    defaults. The engine runs it as a :class:`wsss.engine.trainer.Schedule`."""

    epochs: int = 5
    iterations: int = 0  # > 0: this many steps instead of epochs (DeepLab)
    batch_size: int = 16  # global batch, split across ranks under torchrun
    lr: float = 0.1
    head_lr_mult: float = 10.0  # the classifier's lr multiplier
    # The reference's PolyOptimizer passed weight decay into SGD's momentum
    # slot, so its published numbers were trained with momentum ~1e-4.
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 1e-4
    poly_power: float = 0.9


@dataclass
class TrainConfig(ScheduleConfig):
    """train_cam: the CAM network's schedule (the IRN/GSLM recipe by default) and its loop."""

    max_steps: int = 0  # > 0 caps the steps of every training phase (smoke runs)
    # A trained network of this config's model (e.g. another run's checkpoints/final.pth)
    # loaded whole before the first phase. With epochs: 0 it is taken as it is: a finished
    # CAM run becomes the GLM of GSLM's rounds without training it again.
    init_checkpoint: str = ""
    workers: int = 4
    log_interval: int = 20
    ckpt_interval: int = 200  # steps between last.pth saves (and at each phase end)
    vis_interval: int = 200  # steps between CAM overlays in TensorBoard (0 = off)
    aug: AugConfig = field(default_factory=AugConfig)


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    # torch.compile's backend: inductor (the fast one), or e.g. aot_eager to trace and run the
    # same graphs without code generation (isolates a compiler problem; what the CPU tests use)
    compile_backend: str = "inductor"
    sync_bn: bool = True  # under DDP on CUDA, trainable BN becomes SyncBatchNorm
    pin_memory: bool = True
    persistent_workers: bool = True
    threads: int = 0  # torch.set_num_threads when > 0
    tensorboard: bool = True
    progress: bool = True  # tqdm bars


@dataclass
class CamConfig:
    """make_cam: multi-scale + flip CAM inference."""

    split: str = "train_aug"
    checkpoint: str = ""  # default: <work_dir>/checkpoints/final.pth
    out_dir: str = ""  # default: <work_dir>/cams
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    # The image at each scale. bicubic: PIL on the uint8 image, then normalise: how
    # both references (IRN, GSLM) write their CAM files. nearest: the normalised
    # tensor, sizes floored: GSLM's per-round evaluation path only.
    resize_mode: Literal["nearest", "bicubic", "bilinear"] = "bicubic"
    dtype: Literal["float16", "float32"] = "float32"
    save_strided: bool = False
    strided_stride: int = 4
    images_per_batch: int = 4  # equal-sized images are batched (exact: BN is frozen in eval)
    workers: int = 2
    redo: bool = False


@dataclass
class EvalCamConfig:
    split: str = "train"
    cam_dir: str = ""  # default: cam.out_dir
    thresholds: list[float] = field(default_factory=list)  # explicit list, or the range below
    threshold_start: float = 0.05
    threshold_stop: float = 0.60  # inclusive
    threshold_step: float = 0.01
    report_threshold: float = -1.0  # also report this threshold (< 0: none)
    # Also score "CAM+CRF": the CAM at one threshold (report_threshold if set, else the
    # sweep's best) refined by the pseudo masks' label CRF (pseudo.crf_params), as the
    # GSLM reference scores each SLM round.
    crf: bool = True
    coverage_threshold: float = 0.30  # synthetic data: part/body coverage at this fixed threshold too


@dataclass
class CRFConfig:
    """A dense CRF (pydensecrf): its iterations and its two kernels, Gaussian (position) and
    bilateral (position + colour). Declared once; ``pseudo.crf_params`` (the pseudo masks'
    label CRF, GSLM's values by default) and ``seg.crf_params`` (DeepLab's probability CRF)
    are each one of these."""

    iters: int = 10
    gt_prob: float = 0.7  # label CRF: the probability given to each pixel's label (unary_from_labels)
    gauss_sxy: float = 3.0
    gauss_compat: float = 10.0  # GSLM uses 10, IRN 3
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    # > 0: the two sxy (pixel units) are for images of this long side and scale with each
    # image's (sxy * max(H, W) / reference_size; the synthetic configs: 500, VOC's, for their
    # smaller images); 0: used as given (VOC)
    reference_size: float = 0.0

    def sxy_for(self, h: int, w: int) -> tuple[float, float]:
        """(Gaussian sxy, bilateral sxy) for an image of h x w pixels."""
        f = max(h, w) / self.reference_size if self.reference_size > 0 else 1.0
        return self.gauss_sxy * f, self.bilateral_sxy * f


@dataclass
class PseudoConfig:
    split: str = "train_aug"
    cam_dir: str = ""  # default: cam.out_dir
    out_dir: str = ""  # default: <work_dir>/pseudo
    fg_thres: float = 0.30
    bg_thres: float = 0.05
    crf: bool = True
    crf_params: CRFConfig = field(default_factory=CRFConfig)  # the label CRF (GSLM's)
    shared_pairwise: bool = True  # build the CRF's pairwise terms once for fg and bg
    workers: int = 2
    redo: bool = False
    eval_split: str = "train"  # evaluate the masks of this split against GT ("" = skip)


@dataclass
class Config:
    exp_name: str = ""  # default: the config file's name
    work_dir: str = ""  # default: work_dirs/<exp_name>
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    eval_cam: EvalCamConfig = field(default_factory=EvalCamConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    # Sections registered by other modules (seg, pipeline, pretrain; a method's, such as
    # ppl or gslm, only when the config uses it) live here, reachable as attributes:
    # cfg.gslm.rounds.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(name)


def register_section(name: str, schema: type) -> type:
    """Declare a top-level config section (a dataclass) owned by another module
    (:func:`wsss.registry.register_section`; kept here for the modules that call it from config)."""
    if name in _BUILTIN:
        raise ValueError(f"config section {name!r} is built in")
    return registry.register_section(name, schema)


_BUILTIN = frozenset(f.name for f in dataclasses.fields(Config))


def _sections() -> dict[str, type]:
    """The registered sections (importing the plugins that declare them)."""
    sections = registry.config_sections()
    clash = sorted(set(sections) & _BUILTIN)
    if clash:
        raise ValueError(f"config section {clash[0]!r} is built in")
    return sections


# --------------------------------------------------------------------------
# Loading YAML with provenance
# --------------------------------------------------------------------------
def read_yaml_mapping(path: Path, referrer: str | None = None) -> dict:
    """A YAML file whose top level is a mapping ({} for an empty file); a missing file, bad
    YAML or another top level is a ConfigError naming the file."""
    if not path.is_file():
        where = f" (named in _base_ of {referrer})" if referrer else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(dst: dict, dst_src: dict, src: dict, origin: str, prefix: str = "") -> None:
    """Merge ``src`` into ``dst``; ``dst_src`` maps dotted keys to their origin."""
    for key, value in src.items():
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: key {key!r} under '{prefix or '<top>'}' is not a string")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], dst_src, value, origin, dotted + ".")
        else:
            # A replaced subtree forgets where its old leaves came from.
            for k in [k for k in dst_src if k.startswith(dotted + ".")]:
                del dst_src[k]
            dst[key] = _copy(value)
            dst_src[dotted] = origin
            if isinstance(value, dict):
                _mark(value, dst_src, origin, dotted + ".")


def _mark(tree: dict, dst_src: dict, origin: str, prefix: str) -> None:
    for key, value in tree.items():
        dst_src[f"{prefix}{key}"] = origin
        if isinstance(value, dict):
            _mark(value, dst_src, origin, f"{prefix}{key}.")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def load_yaml_tree(path: str | os.PathLike, _stack: tuple[Path, ...] = (), _referrer: str | None = None) -> tuple[dict, dict]:
    """Read a config file and its bases; return (merged dict, key -> origin file)."""
    path = Path(path).resolve()
    if path in _stack:
        cycle = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"circular _base_: {cycle}")
    data = read_yaml_mapping(path, _referrer)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    origins: dict = {}
    for base in bases:
        base_tree, base_origins = load_yaml_tree(path.parent / base, (*_stack, path), str(path))
        _merge(merged, origins, base_tree, "", "")
        # keep the base's own provenance for its keys
        for k, v in base_origins.items():
            origins[k] = v
    _merge(merged, origins, data, str(path))
    return merged, origins


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} from {CLI} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} from {CLI} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(tree: dict, origins: dict, overrides: list[str]) -> None:
    for text in overrides:
        key, value = _parse_override(text)
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        sub = {parts[-1]: value}
        _merge(node, origins, sub, CLI, ".".join(parts[:-1]) + "." if len(parts) > 1 else "")


# --------------------------------------------------------------------------
# Validation against the schema
# --------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list[{_type_name(arg)}]"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Invalid(Exception):
    pass


def _convert(tp: Any, value: Any, key: str, origins: dict) -> Any:
    """Check ``value`` against type ``tp``; return the typed value."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise _Invalid()
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, key, origins)
            except _Invalid:
                continue
        raise _Invalid()
    if tp is type(None):
        if value is None:
            return None
        raise _Invalid()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid()
        (arg,) = typing.get_args(tp) or (Any,)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(arg, item, f"{key}[{i}]", origins))
            except _Invalid:
                raise ConfigError(
                    f"{key}[{i}]: expected {_type_name(arg)}, got {type(item).__name__} {item!r} (from {_origin(key, origins)})"
                ) from None
        return out
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid()
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Invalid()
        return _build(tp, value, key + ".", origins)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Invalid()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Invalid()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Invalid()
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Invalid()
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _origin(key: str, origins: dict) -> str:
    probe = key
    while probe:
        if probe in origins and origins[probe]:
            return origins[probe]
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""
    return "the defaults"


def _build(schema: type, tree: dict, prefix: str, origins: dict, extra_sections: dict | None = None) -> Any:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.name != "extra"}
    extra_sections = extra_sections or {}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key in fields:
            own = _own_defaults(fields[key], hints[key])
            if own is not None and isinstance(value, dict):
                value = _overlay(own, value)  # keys not given keep the section's own defaults
            try:
                kwargs[key] = _convert(hints[key], value, dotted, origins)
            except _Invalid:
                raise ConfigError(
                    f"{dotted}: expected {_type_name(hints[key])}, got {type(value).__name__} {value!r} (from {_origin(dotted, origins)})"
                ) from None
        elif key in extra_sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected mapping, got {type(value).__name__} (from {_origin(dotted, origins)})")
            extra[key] = _build(extra_sections[key], value, dotted + ".", origins)
        else:
            known = sorted([*fields, *extra_sections])
            raise ConfigError(
                f"unknown key '{dotted}' (from {_origin(dotted, origins)}); known keys here: {', '.join(known)}"
            )
    for name, f in fields.items():
        if name in kwargs:
            continue
        if dataclasses.is_dataclass(hints[name]):
            # build absent sections from their defaults, so required keys inside are caught
            kwargs[name] = _build(hints[name], _own_defaults(f, hints[name]) or {}, f"{prefix}{name}.", origins)
            continue
        if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing required key '{prefix}{name}' (not set in {_origin(prefix.rstrip('.'), origins)} or its _base_ files)")
    for name, sec in extra_sections.items():
        if name not in extra:
            extra[name] = _build(sec, {}, f"{prefix}{name}.", origins)
    obj = schema(**kwargs)
    if extra_sections:
        obj.extra = extra
    return obj


# Keys that moved (old dotted name -> new). A config, an override or a stored config that
# still uses an old name works as before, with a note naming the new one; fingerprints
# recorded under an old name compare as the new one (wsss.fingerprint).
_CRF_KERNEL = ("gauss_sxy", "gauss_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
RENAMED_KEYS: dict[str, str] = {
    "pseudo.crf_iters": "pseudo.crf_params.iters",
    "pseudo.gt_prob": "pseudo.crf_params.gt_prob",
    **{f"pseudo.{k}": f"pseudo.crf_params.{k}" for k in _CRF_KERNEL},
    "pseudo.crf_reference_size": "pseudo.crf_params.reference_size",
    "seg.crf_iters": "seg.crf_params.iters",
    **{f"seg.crf_{k}": f"seg.crf_params.{k}" for k in _CRF_KERNEL},
}
_noted: set[str] = set()


def _apply_renames(tree: dict, origins: dict, note: bool = True) -> None:
    """Move keys set under an old name (:data:`RENAMED_KEYS`) to their new place. The old
    name wins over the new one unless only the new one came from the command line."""
    for old, new in RENAMED_KEYS.items():
        *path, leaf = old.split(".")
        node: Any = tree
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value, src = node.pop(leaf), origins.pop(old, "")
        *npath, nleaf = new.split(".")
        dst = tree
        for part in npath:
            if not isinstance(dst.get(part), dict):
                dst[part] = {}
            dst = dst[part]
        if nleaf in dst and origins.get(new) == CLI and src != CLI:
            continue
        dst[nleaf] = value
        origins[new] = src
        if note and old not in _noted and os.environ.get("RANK", "0") == "0":
            _noted.add(old)
            print(f"note: {old} (from {src or 'a stored config'}) is now {new}; read as that", file=sys.stderr)


def _own_defaults(f: dataclasses.Field, hint: Any) -> dict | None:
    """The defaults a section gives a shared nested schema through its factory (``seg.aug``,
    ``seg.crf_params``): a dict to build on; None when the schema's own defaults apply."""
    factory = f.default_factory  # type: ignore[misc]
    if dataclasses.is_dataclass(hint) and factory is not MISSING and factory is not hint:
        return to_dict(factory())
    return None


def _overlay(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(tree: dict, origins: dict | None = None, note_renames: bool = True) -> Config:
    origins = {} if origins is None else origins
    _apply_renames(tree, origins, note=note_renames)
    sections = {name: s for name, s in _sections().items() if registry.section_present(name, tree)}
    return _build(Config, tree, "", origins, sections)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load, merge, override and validate a config file."""
    tree, origins = load_yaml_tree(path)
    apply_overrides(tree, origins, list(overrides or []))
    if not tree.get("exp_name"):
        tree["exp_name"] = Path(path).stem
    cfg = build_config(tree, origins)
    finalize(cfg)
    return cfg


def finalize(cfg: Config) -> None:
    """Fill the path defaults that derive from other keys."""
    if not cfg.exp_name:
        cfg.exp_name = "experiment"
    if not cfg.work_dir:
        cfg.work_dir = str(Path("work_dirs") / cfg.exp_name)
    if not cfg.data.label_file:
        cfg.data.label_file = str(Path(cfg.data.root) / "cls_labels.json")
    if not cfg.cam.checkpoint:
        cfg.cam.checkpoint = str(Path(cfg.work_dir) / "checkpoints" / "final.pth")
    if not cfg.cam.out_dir:
        cfg.cam.out_dir = str(Path(cfg.work_dir) / "cams")
    if not cfg.eval_cam.cam_dir:
        cfg.eval_cam.cam_dir = cfg.cam.out_dir
    if not cfg.pseudo.cam_dir:
        cfg.pseudo.cam_dir = cfg.cam.out_dir
    if not cfg.pseudo.out_dir:
        cfg.pseudo.out_dir = str(Path(cfg.work_dir) / "pseudo")
    registry.run_finalizers(cfg)
    check_outputs_inside_work_dir(cfg)


OUTPUT_KEYS = ["cam.out_dir", "pseudo.out_dir", "seg.out_dir", "seg.checkpoint"]


def check_outputs_inside_work_dir(cfg: Config) -> None:
    """Every path a stage writes to lies under work_dir: no write escapes the experiment."""
    work = Path(cfg.work_dir).resolve()
    for key in OUTPUT_KEYS:
        section, name = key.split(".")
        obj = getattr(cfg, section, None)
        if obj is None:
            continue
        value = Path(getattr(obj, name)).resolve()
        if value != work and work not in value.parents:
            raise ConfigError(f"{key}: {getattr(obj, name)} is outside work_dir {cfg.work_dir}; outputs are written under work_dir only")


# --------------------------------------------------------------------------
# Back to plain data
# --------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "extra"}
        for name, sec in (getattr(obj, "extra", None) or {}).items():
            out[name] = to_dict(sec)
        return out
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | os.PathLike | None = None) -> Path:
    """Write the resolved config (atomically); default ``<work_dir>/config.yaml``."""
    path = Path(path) if path else Path(cfg.work_dir) / "config.yaml"
    atomic_write_text(path, "# resolved config, written by wsss\n" + dump_config(cfg))
    return path


def config_from_dict(tree: dict) -> Config:
    """Rebuild a Config from a resolved dict (as stored in checkpoints)."""
    cfg = build_config(_copy(tree), {}, note_renames=False)
    return cfg


def parse_args(argv: list[str] | None = None, description: str = "", extra_args=None):
    """``--config FILE [key=value ...]`` plus script-specific flags.

    Returns (cfg, args). Errors print one line and exit with status 2.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file")
    if extra_args:
        extra_args(parser)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.01 work_dir=/tmp/x")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg, args
