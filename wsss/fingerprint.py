"""Which config keys can change each stage's output: the fingerprint a stage records beside it.

A stage's fingerprint is the value of every config key that can change what the
stage writes (its *keys*), plus the fingerprints of the upstream outputs it reads
(its *inputs*, filled in by :mod:`wsss.provenance`). A key is either declared here
for a stage or declared harmless; ``tests/test_fingerprints.py`` checks that every
key of the schema is one of the two, so a key added later cannot slip through.

Harmless keys change speed, logging or where things are, never a number:

* any key named ``workers``, ``log_interval``, ``ckpt_interval``, ``vis_interval``,
  ``redo``, ``progress``, ``tensorboard``, ``threads``, ``pin_memory`` or
  ``persistent_workers``, in any section (method sections included);
* paths of inputs and outputs (``data.root``, ``data.label_file``, ``work_dir``,
  ``*.out_dir``, ``cam.checkpoint``, ...): what they hold is fingerprinted instead
  (weights by their SHA-256, upstream folders by their ``made_by.json``);
* ``runtime.device``, ``runtime.deterministic``, ``runtime.channels_last``,
  ``runtime.compile``: the same arithmetic in another order or on another device;
  results move by float rounding only, as between thread counts (docs/reproducibility.md);
* which ids a producing stage covers (``cam.split``, ``pseudo.split``): one file per
  id, each the same whatever the list; ``cam.images_per_batch`` (batching is exact)
  and ``pseudo.shared_pairwise`` (identical masks, tested); the ``pipeline`` section.

``runtime.amp`` changes the arithmetic's precision and is a key of every stage that
runs a network; ``runtime.sync_bn`` changes training under DDP.

Method sections (every registered section the shared layer does not own) belong
to the CAM model: all their keys but the harmless ones are keys of train_cam and
make_cam, without this module naming a method.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import yaml

from wsss.config import RENAMED_KEYS, Config, ConfigError, to_dict
from wsss.fileio import DataError

HARMLESS_NAMES = frozenset({"workers", "log_interval", "ckpt_interval", "vis_interval", "redo", "progress", "tensorboard",
                            "threads", "pin_memory", "persistent_workers"})
HARMLESS_KEYS = frozenset({
    "exp_name", "work_dir", "data.root", "data.label_file",
    "runtime.device", "runtime.deterministic", "runtime.channels_last", "runtime.compile", "runtime.compile_backend",
    "cam.split", "cam.checkpoint", "cam.out_dir", "cam.images_per_batch",
    "eval_cam.cam_dir",
    "pseudo.split", "pseudo.cam_dir", "pseudo.out_dir", "pseudo.shared_pairwise",
    "seg.out_dir", "seg.checkpoint", "seg.save_predictions",
    "pipeline",
    # the pretrained start's recipe: the weights file it makes is fingerprinted by content
    # (model.weights), and wsss.pretrain refuses a file made by another recipe
    "pretrain",
})
# keys whose value stands for a file or folder: provenance puts what they hold in the fingerprint
CONTENT_KEYS = frozenset({"model.weights", "train.init_checkpoint", "seg.weights", "seg.mask_dir"})

# the shared layer's own registered sections; every other registered section is a method's
SHARED_SECTIONS = frozenset({"seg", "pipeline", "pretrain"})

CRF_KEYS = ["pseudo.crf_params"]
SEG_EVAL_KEYS = ["seg.val_split", "seg.test_split", "seg.scales", "seg.flip", "seg.crf", "seg.crf_params"]
METHODS = "<method sections>"

# per stage: the keys (whole sections or dotted keys) that can change its output, and the exceptions
STAGE_KEYS: dict[str, list[str]] = {
    "train_cam": ["seed", "data", "model", "train", "runtime.amp", "runtime.sync_bn", METHODS],
    "make_cam": ["model", "cam", "train.aug.mean", "train.aug.std", "runtime.amp", METHODS],
    "eval_cam": ["data", "eval_cam", *CRF_KEYS],
    "make_pseudo": ["data", "pseudo"],
    "eval_pseudo": ["data", "pseudo.eval_split"],
    "train_seg": ["seed", "data", "seg", "train.max_steps", "runtime.amp", "runtime.sync_bn"],
    "eval_seg": ["data", *SEG_EVAL_KEYS, "seg.aug.mean", "seg.aug.std"],
}
STAGE_EXCLUDES: dict[str, list[str]] = {
    "make_pseudo": ["pseudo.eval_split"],
    "train_seg": SEG_EVAL_KEYS,
}
# A method's extra training phases (registered with register_extra_phases, e.g. rounds that
# retrain on their own pseudo masks and score each round) run make_cam, make_pseudo and
# eval_cam on the way, so when a config has any, train_cam also depends on those stages' keys.
EXTRA_PHASE_STAGES = ["make_cam", "make_pseudo", "eval_cam", "eval_pseudo"]

# producing stages keep a record beside their output (wsss.provenance); evaluations run again
# when their fingerprint changed, and keep theirs in their metrics JSON
EVAL_STAGES = ["eval_cam", "eval_pseudo", "eval_seg"]


class StaleOutputError(ConfigError, DataError):
    """A stage's output in work_dir was made under another config (or from other inputs).

    A ConfigError (scripts print ``config error: ...`` and exit 2) and a DataError (what
    make_cam raised for a stale CAM folder before), with the stage, the record's path
    and the changed keys, so run_pipeline can name its own way out.
    """

    def __init__(self, stage: str, where: str, changes: list[tuple[str, Any, Any]], what: str = "outputs",
                 pipeline: bool = False, note: str = "", also: str = ""):
        self.stage, self.where, self.changes, self.what, self.pipeline, self.note = stage, where, changes, what, pipeline, note
        self.also = also  # a third way out, for the stage that ran into this output
        super().__init__(self._message())

    def __reduce__(self):
        return (StaleOutputError, (self.stage, self.where, self.changes, self.what, self.pipeline, self.note, self.also))

    def for_pipeline(self) -> "StaleOutputError":
        return StaleOutputError(self.stage, self.where, self.changes, self.what, pipeline=True, note=self.note, also=self.also)

    def with_also(self, also: str) -> "StaleOutputError":
        return StaleOutputError(self.stage, self.where, self.changes, self.what, self.pipeline, self.note, also)

    def _message(self) -> str:
        keys = list(dict.fromkeys(k for k, _, _ in self.changes))
        names = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "settings"
        if self.pipeline:
            way = (f"use another work_dir=DIR for this config, or --redo-from {self.stage} to redo {self.stage} "
                   "and every stage after it here")
        else:
            way = f"{REDO_HINTS[self.stage]} (run_pipeline.py: --redo-from {self.stage}), or use another work_dir=DIR"
        detail = "; ".join(f"{k}: {show(a)} -> {show(b)}" for k, a, b in self.changes[:8])
        if len(self.changes) > 8:
            detail += f"; and {len(self.changes) - 8} more"
        return (f"{self.where}: the {self.what} there were made with other {names}; {way}"
                + (f"; {self.also}" if self.also else "") + (f" ({self.note or detail})" if (self.note or detail) else ""))


REDO_HINTS = {
    "train_cam": "redo it with train_cam.py --no-resume",
    "make_cam": "set cam.redo=true to make them again",
    "make_pseudo": "set pseudo.redo=true to make them again",
    "train_seg": "redo it with train_seg.py --no-resume",
}


def show(v: Any) -> str:
    """A value as one would type it in an override (YAML flow style), shortened."""
    if v is MISSING_VALUE:
        return "(none)"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]  # a SHA-256
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


class _Missing:
    def __repr__(self) -> str:
        return "(none)"


MISSING_VALUE = _Missing()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted key: leaf value}; lists are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}


def diff(old: dict | None, new: dict | None, aliases: dict[str, str] | None = None) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every leaf that differs; keys renamed by ``aliases`` (record name -> config key).

    Two differences are not changes: a key the code gained since ``old`` was recorded,
    at its default (a new key defaults to the old behaviour), and a key the code no
    longer has (no config can set it any more). Fingerprints cover the config; a change
    of the code itself is the commit's business (docs/reproducibility.md).
    """
    a, b = _moved(flatten(old or {})), _moved(flatten(new or {}))
    aliases = RECORD_ALIASES if aliases is None else aliases
    defaults = schema_defaults()
    out = []
    for k in sorted(set(a) | set(b), key=_order):
        va, vb = a.get(k, MISSING_VALUE), b.get(k, MISSING_VALUE)
        if va == vb:
            continue
        name = _rename(k, aliases or {})
        if old and new and va is MISSING_VALUE and name in defaults and defaults[name] == vb:
            continue
        if old and new and vb is MISSING_VALUE and va is not MISSING_VALUE and _covers(a, b, k):
            continue
        out.append((name, va, vb))
    return out


def _moved(flat: dict[str, Any]) -> dict[str, Any]:
    """A record's keys with the config keys that moved under their new names
    (:data:`wsss.config.RENAMED_KEYS`), so a record made before a move still compares."""
    out = {}
    for k, v in flat.items():
        for old, new in RENAMED_KEYS.items():
            if k == old or k.endswith("." + old):
                k = k[: len(k) - len(old)] + new
                break
        out[k] = v
    return out


def _covers(a: dict, b: dict, key: str) -> bool:
    """``key`` is gone from the new record, and no new key replaced it at the same place."""
    return not any(k.startswith(key + ".") or key.startswith(k + ".") for k in b)


_DEFAULTS: dict[str, Any] | None = None


def schema_defaults() -> dict[str, Any]:
    """{dotted key: default} of every key of the schema that has a default (registered sections included)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        from wsss.registry import config_sections

        out: dict[str, Any] = {}
        _defaults_of(Config, "", out)
        for name, schema in config_sections().items():
            _defaults_of(schema, f"{name}.", out)
        _DEFAULTS = out
    return _DEFAULTS


def _defaults_of(schema: type, prefix: str, out: dict) -> None:
    import typing

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name == "extra":
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            factory = f.default_factory  # type: ignore[misc]
            if factory is dataclasses.MISSING or factory is hints[f.name]:
                _defaults_of(hints[f.name], f"{prefix}{f.name}.", out)
            else:  # a section's own defaults for a shared schema (seg.crf_params, seg.aug)
                for k, v in flatten(json.loads(json.dumps(to_dict(factory())))).items():
                    out[f"{prefix}{f.name}.{k}"] = v
        elif f.default is not dataclasses.MISSING:
            out[prefix + f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[prefix + f.name] = json.loads(json.dumps(to_dict(f.default_factory())))  # type: ignore[misc]


def _order(key: str) -> tuple:
    # upstream inputs first: the earliest change is the one to act on
    return (0 if key.startswith("inputs.") else 1, key)


def _rename(key: str, aliases: dict[str, str]) -> str:
    # an upstream record's keys are named as the config names them, without the path in the record
    while key.startswith("inputs.") and key.count(".") >= 2:
        key = key.split(".", 2)[2]
    key = key.removeprefix("keys.")
    head = key.split(".", 1)[0]
    if head in aliases:
        key = aliases[head] + key[len(head):]
    return key


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def is_harmless(key: str) -> bool:
    parts = key.split(".")
    if parts[-1] in HARMLESS_NAMES:
        return True
    return any(".".join(parts[:i]) in HARMLESS_KEYS for i in range(1, len(parts) + 1))


def method_sections(cfg: Config) -> list[str]:
    """Registered sections the shared layer does not own: the methods' (ppl, gslm, ...)."""
    builtin = {f.name for f in dataclasses.fields(Config)}
    return sorted(name for name in to_dict(cfg) if name not in builtin and name not in SHARED_SECTIONS)


def has_extra_phases(cfg: Config) -> bool:
    from wsss.registry import extra_phase_providers

    return any(provider(cfg) for provider in extra_phase_providers())


def stage_patterns(cfg: Config, stage: str) -> tuple[list[str], list[str]]:
    """(included, excluded) dotted prefixes of a stage's keys for this config."""
    if stage not in STAGE_KEYS:
        raise ConfigError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_KEYS)}")
    include = []
    for p in STAGE_KEYS[stage]:
        include += method_sections(cfg) if p == METHODS else [p]
    exclude = list(STAGE_EXCLUDES.get(stage, []))
    if stage == "train_cam" and has_extra_phases(cfg):
        for s in EXTRA_PHASE_STAGES:
            include += [p for p in STAGE_KEYS[s] if p != METHODS and p not in include]
    return include, exclude


def _covered(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def stage_keys(cfg: Config, stage: str) -> dict[str, Any]:
    """{dotted key: value} of the config keys that can change ``stage``'s output
    (content keys excluded: provenance records what their files hold)."""
    include, exclude = stage_patterns(cfg, stage)
    flat = flatten(to_dict(cfg))
    return {k: v for k, v in flat.items()
            if _covered(k, include) and not _covered(k, exclude) and not is_harmless(k) and k not in CONTENT_KEYS}


# make_cam's record (cams/made_by.json) keeps its historical layout: the cam section's keys
# at the top level, the model section, the normalisation and AMP under short names, and
# each method section under its own name. These are the config keys those names stand for.
CAM_ALIASES = {"mean": "train.aug.mean", "std": "train.aug.std", "amp": "runtime.amp"}


def cam_settings(cfg: Config) -> dict:
    """Every setting but the weights that changes a CAM value, in make_cam's record layout."""
    keys = stage_keys(cfg, "make_cam")
    out: dict[str, Any] = {}
    for k, v in keys.items():
        section, _, rest = k.partition(".")
        if section == "cam":
            out[rest] = v
        elif k in CAM_ALIASES.values():
            out[next(a for a, full in CAM_ALIASES.items() if full == k)] = v
        else:  # model.* and method sections, nested under their section's name
            node = out.setdefault(section, {})
            parts = rest.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
    return json.loads(json.dumps(out))


def _cam_record_aliases() -> dict[str, str]:
    from wsss.config import CamConfig

    return {**{f.name: f"cam.{f.name}" for f in dataclasses.fields(CamConfig)}, **CAM_ALIASES}


# make_cam's record names -> config keys (messages, defaults); other records use config keys already
RECORD_ALIASES = _cam_record_aliases()


def changed(old: dict | None, new: dict | None) -> list[tuple[str, Any, Any]]:
    """:func:`diff` with make_cam's record names mapped to config keys; [] = the same."""
    return diff(old, new, RECORD_ALIASES)
