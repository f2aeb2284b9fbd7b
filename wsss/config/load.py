"""Loading a config: YAML files with ``_base_`` inheritance, dotted overrides, validation.

A config file is YAML. It may name other files in ``_base_`` (a string or a list, paths
relative to the file); bases merge first, in list order, and the file's own keys win. Dicts
merge key by key; any other value (lists included) replaces what was there. Command-line
overrides (``train.lr=0.01``) apply last; their values are parsed as YAML
(``cam.scales=[1.0,0.5]``).

Every key is declared in :mod:`wsss.config.schema` (a method's section by its package,
through :func:`wsss.registry.register_section`). Loading checks every key against it: an
unknown key, a value of the wrong type or a required key without a value raises
:class:`ConfigError` naming the key and the file it came from. Then the paths left empty
take their defaults under ``work_dir`` (:func:`wsss.layout.fill_paths`).
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from wsss import layout, registry
from wsss.config.schema import Config
from wsss.errors import ConfigError
from wsss.fileio import atomic_write_text

MISSING: Any = dataclasses.MISSING
CLI = "the command line"


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
            if dotted in RENAMED:
                raise ConfigError(f"{dotted} (from {_origin(dotted, origins)}) is now {RENAMED[dotted]}; set that instead")
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


# Keys that were renamed: a config that still uses an old name is refused with the new one.
_CRF_KERNEL = ("gauss_sxy", "gauss_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
RENAMED: dict[str, str] = {
    "pseudo.crf_iters": "pseudo.crf_params.iters",
    "pseudo.gt_prob": "pseudo.crf_params.gt_prob",
    **{f"pseudo.{k}": f"pseudo.crf_params.{k}" for k in _CRF_KERNEL},
    "pseudo.crf_reference_size": "pseudo.crf_params.reference_size",
    "seg.crf_iters": "seg.crf_params.iters",
    **{f"seg.crf_{k}": f"seg.crf_params.{k}" for k in _CRF_KERNEL},
}


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


def method_sections() -> dict[str, type]:
    """The methods' registered sections (importing the packages that declare them)."""
    sections = registry.config_sections()
    clash = sorted(set(sections) & {f.name for f in dataclasses.fields(Config)})
    if clash:
        raise ValueError(f"config section {clash[0]!r} is built in")
    return sections


def build_config(tree: dict, origins: dict | None = None) -> Config:
    origins = {} if origins is None else origins
    sections = {name: s for name, s in method_sections().items() if registry.section_present(name, tree)}
    return _build(Config, tree, "", origins, sections)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load, merge, override and validate a config file; the paths it leaves empty take their defaults."""
    tree, origins = load_yaml_tree(path)
    apply_overrides(tree, origins, list(overrides or []))
    if not tree.get("exp_name"):
        tree["exp_name"] = Path(path).stem
    cfg = build_config(tree, origins)
    layout.fill_paths(cfg)
    return cfg


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
    path = Path(path) if path else layout.config_file(cfg)
    atomic_write_text(path, "# resolved config, written by wsss\n" + dump_config(cfg))
    return path


def config_from_dict(tree: dict) -> Config:
    """Rebuild a Config from a resolved dict (as stored in checkpoints)."""
    return build_config(_copy(tree), {})
