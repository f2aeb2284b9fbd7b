"""What each output of a work_dir was made from, checked before a stage runs or a number is reported.

A stage's **record** is the value of every config key that can change what it makes (its
*keys*: the key patterns of its row in ``wsss.stages.STAGES``; weights files by their
SHA-256) and the records of what it reads (its *inputs*)::

    {"stage": "make_pseudo", "keys": {"pseudo.fg_thres": 0.3, ...}, "inputs": {"cams": {...make_cam's record}}}

A producing stage writes its record as ``made_by.json`` in its output folder (wsss.layout)
before any output; an evaluation keeps it in its metrics JSON; run_pipeline in its markers.
Since inputs nest, a change anywhere upstream reaches every stage below.

A key is either a key of some stage or declared harmless here (a test checks every key of
the schema), so a key added later cannot slip through. Harmless keys change speed,
logging or where things are, never a number:

* any key named ``workers``, ``log_interval``, ``ckpt_interval``, ``vis_interval``,
  ``redo``, ``progress``, ``tensorboard``, ``threads``, ``pin_memory`` or
  ``persistent_workers``, in any section (method sections included);
* paths of inputs and outputs (``data.root``, ``work_dir``, ``*.out_dir``,
  ``cam.checkpoint``, ...): what they hold is recorded instead;
* ``runtime.device``, ``runtime.deterministic``, ``runtime.channels_last``,
  ``runtime.compile``: the same arithmetic in another order or on another device;
* which ids a producing stage covers (``cam.split``, ``pseudo.split``),
  ``cam.images_per_batch`` (batching is exact), ``pseudo.shared_pairwise`` (identical
  masks, tested), the ``pipeline`` section, and ``pretrain`` (the weights file it makes is
  recorded by content, and wsss.pretrain refuses a file made by another recipe).

Method sections (every section a method registers) belong to the CAM model: their keys
are keys of train_cam and make_cam, without this module naming a method.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from wsss import layout
from wsss.config import Config, ConfigError, to_dict
from wsss.config import method_sections as registered_sections
from wsss.fileio import DataError, atomic_write_json, read_json, remove_stale_temps
from wsss.fileio import file_sha256 as sha256_of_file

HARMLESS_NAMES = frozenset({"workers", "log_interval", "ckpt_interval", "vis_interval", "redo", "progress", "tensorboard",
                            "threads", "pin_memory", "persistent_workers",
                            # a CRF's backend: the same arithmetic (bit for bit on the CPU; to
                            # rounding on CUDA, as runtime.device)
                            "backend"})
HARMLESS_KEYS = frozenset({
    "exp_name", "work_dir", "data.root", "data.label_file",
    "runtime.device", "runtime.deterministic", "runtime.channels_last", "runtime.compile", "runtime.compile_backend",
    "runtime.dist_backend",
    "cam.split", "cam.checkpoint", "cam.out_dir", "cam.images_per_batch",
    "eval_cam.cam_dir",
    "pseudo.split", "pseudo.cam_dir", "pseudo.out_dir", "pseudo.shared_pairwise",
    "seg.out_dir", "seg.checkpoint", "seg.save_predictions",
    # make_irn_labels covers its split image by image (as cam.split); the sparse and the dense
    # walk are the same sum in another order (tested to rounding)
    "irn.out_dir", "irn.checkpoint", "irn.cam_dir", "irn.split", "irn.walk",
    "pipeline", "pretrain",
})
# keys whose value stands for a file (recorded by its SHA-256: wsss.records.file_identity) or a
# folder (recorded by the record of what it holds: a stage's inputs)
FILE_KEYS = frozenset({"model.weights", "train.init_checkpoint", "seg.weights", "irn.weights"})
CONTENT_KEYS = FILE_KEYS | {"seg.mask_dir", "irn.mask_dir"}
METHODS = "<method sections>"  # in a stage's keys: every method section of the config


class StaleOutputError(ConfigError, DataError):
    """A stage's output in work_dir was made under another config (or from other inputs).

    A ConfigError (scripts print ``config error: ...`` and exit 2) and a DataError, with the
    stage, the record's path and the changed keys, so run_pipeline can name its own way out.
    """

    def __init__(self, stage: str, where: str, changes: list[tuple[str, Any, Any]], what: str = "outputs",
                 redo: str = "", pipeline: bool = False, note: str = "", also: str = ""):
        self.stage, self.where, self.changes, self.what, self.redo = stage, where, changes, what, redo
        self.pipeline, self.note, self.also = pipeline, note, also  # also: a third way out
        super().__init__(self._message())

    def __reduce__(self):
        return (StaleOutputError, (self.stage, self.where, self.changes, self.what, self.redo, self.pipeline, self.note,
                                   self.also))

    def for_pipeline(self) -> "StaleOutputError":
        return StaleOutputError(self.stage, self.where, self.changes, self.what, self.redo, True, self.note, self.also)

    def with_also(self, also: str) -> "StaleOutputError":
        return StaleOutputError(self.stage, self.where, self.changes, self.what, self.redo, self.pipeline, self.note, also)

    def _message(self) -> str:
        keys = list(dict.fromkeys(k for k, _, _ in self.changes))
        names = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "settings"
        if self.pipeline:
            way = (f"use another work_dir=DIR for this config, or --redo-from {self.stage} to redo {self.stage} "
                   "and every stage after it here")
        else:
            way = f"{self.redo} (run_pipeline.py: --redo-from {self.stage}), or use another work_dir=DIR"
        detail = "; ".join(f"{k}: {show(a)} -> {show(b)}" for k, a, b in self.changes[:8])
        if len(self.changes) > 8:
            detail += f"; and {len(self.changes) - 8} more"
        return (f"{self.where}: the {self.what} there were made with other {names}; {way}"
                + (f"; {self.also}" if self.also else "") + (f" ({self.note or detail})" if (self.note or detail) else ""))


# --------------------------------------------------------------------------
# a stage's keys
# --------------------------------------------------------------------------
def is_harmless(key: str) -> bool:
    parts = key.split(".")
    if parts[-1] in HARMLESS_NAMES:
        return True
    return any(".".join(parts[:i]) in HARMLESS_KEYS for i in range(1, len(parts) + 1))


def method_sections(cfg: Config) -> list[str]:
    """The config's method sections (ppl, gslm, ...): the sections methods register."""
    return sorted(cfg.extra)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted key: leaf value}; lists are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}


def _covered(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def key_patterns(cfg: Config, stage) -> tuple[list[str], list[str]]:
    """(included, excluded) dotted prefixes of a stage's keys for this config."""
    include: list[str] = []
    for p in stage.key_patterns(cfg):
        include += method_sections(cfg) if p == METHODS else [p]
    return include, list(stage.excludes)


def stage_keys(cfg: Config, stage) -> dict[str, Any]:
    """{dotted key: value} of the config keys that can change ``stage``'s output (content
    keys excluded: what their files hold is recorded instead)."""
    include, exclude = key_patterns(cfg, stage)
    flat = flatten(to_dict(cfg))
    return {k: v for k, v in flat.items()
            if _covered(k, include) and not _covered(k, exclude) and not is_harmless(k) and k not in CONTENT_KEYS}


def _record_keys(cfg: Config, stage) -> dict[str, Any]:
    """The stage's keys, with the weights files it reads by their identity."""
    include, exclude = key_patterns(cfg, stage)
    keys = stage_keys(cfg, stage)
    for k in sorted(FILE_KEYS):
        if _covered(k, include) and not _covered(k, exclude):
            section, name = k.split(".")
            keys[k] = file_identity(getattr(getattr(cfg, section), name))
    return keys


# --------------------------------------------------------------------------
# identities of files: by content, cached by path, size and mtime
# --------------------------------------------------------------------------
_SHA_CACHE: dict[tuple, str] = {}


def file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached(key: tuple, compute) -> Any:
    """``compute()`` once per key in this process (keys hold a file's path, size and mtime)."""
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = compute()
    return _SHA_CACHE[key]


def file_sha256(path: str | Path) -> str:
    path = Path(path)
    return cached(("file", *file_key(path)), lambda: sha256_of_file(path))


def file_identity(value: str) -> Any:
    """A file setting: a name (``IMAGENET1K_V1``, ``none``) as is, a file by its SHA-256
    (moving the file changes nothing, another file changes the record). A file that the
    stage itself will make (a pretrained start, wsss.pretrain) is ``{"pending": path}``
    until it exists; :func:`same` then takes its SHA-256 for it."""
    if value and Path(value).is_file():
        return file_sha256(value)
    if value and ("/" in value or Path(value).suffix):
        return {"pending": value}
    return value


# --------------------------------------------------------------------------
# comparing records
# --------------------------------------------------------------------------
class _Missing:
    def __repr__(self) -> str:
        return "(none)"


MISSING_VALUE = _Missing()


def show(v: Any) -> str:
    """A value as one would type it in an override (YAML flow style), shortened."""
    if v is MISSING_VALUE:
        return "(none)"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]  # a SHA-256
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def changed(old: dict | None, new: dict | None) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every leaf that differs, named as the config names it; [] = the same.

    Two differences are not changes: a key the code gained since ``old`` was recorded,
    at its default (a new key defaults to the old behaviour), and a key the code no
    longer has (no config can set it any more). Records cover the config; a change of
    the code itself is the commit's business (docs/reproducibility.md).
    """
    a, b = flatten(old or {}), flatten(new or {})
    defaults = schema_defaults()
    out = []
    for k in sorted(set(a) | set(b), key=_order):
        va, vb = a.get(k, MISSING_VALUE), b.get(k, MISSING_VALUE)
        if va == vb:
            continue
        name = _config_name(k)
        if old and new and va is MISSING_VALUE and name in defaults and defaults[name] == vb:
            continue
        if old and new and vb is MISSING_VALUE and va is not MISSING_VALUE and _covers(b, k):
            continue
        out.append((name, va, vb))
    return out


def _covers(b: dict, key: str) -> bool:
    """``key`` is gone from the new record, and no new key replaced it at the same place."""
    return not any(k.startswith(key + ".") or key.startswith(k + ".") for k in b)


def _order(key: str) -> tuple:
    # upstream inputs first: the earliest change is the one to act on
    return (0 if key.startswith("inputs.") else 1, key)


def _config_name(key: str) -> str:
    # an upstream record's keys are named as the config names them, without the path in the record
    while key.startswith("inputs."):
        rest = key.split(".", 2)
        key = rest[2] if len(rest) == 3 else rest[1]
    return key.removeprefix("keys.")


_DEFAULTS: dict[str, Any] | None = None


def schema_defaults() -> dict[str, Any]:
    """{dotted key: default} of every key of the schema that has a default (method sections included)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        out: dict[str, Any] = {}
        _defaults_of(Config, "", out)
        for name, schema in registered_sections().items():
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


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def same(rec: Any, want: Any) -> bool:
    """Whether a record matches what is expected now (:func:`changed`'s rules; a file recorded
    as pending matches the file made since)."""
    if rec is None or want is None:
        return rec is want
    return not changed(_settled(rec, want), want)


def _settled(rec: Any, want: Any) -> Any:
    if isinstance(rec, dict) and set(rec) == {"pending"} and isinstance(want, str):
        p = Path(rec["pending"])
        return want if p.is_file() and file_sha256(p) == want else rec
    if isinstance(rec, dict) and isinstance(want, dict):
        return {k: _settled(v, want[k]) if k in want else v for k, v in rec.items()}
    return rec


# --------------------------------------------------------------------------
# the record a stage's output must have under a config
# --------------------------------------------------------------------------
def expected(cfg: Config, stage, inputs: dict | None = None) -> dict:
    """The record ``stage``'s output must have under ``cfg`` (``inputs``: what it reads, when
    the caller knows better than the row, e.g. make_cam's weights in memory); raises
    StaleOutputError for an upstream output that was made under another config."""
    if inputs is None:
        from wsss.registry import resolve

        inputs = resolve(stage.inputs)(cfg) if stage.inputs else {}
    return {"stage": stage.name, "keys": _record_keys(cfg, stage), "inputs": inputs}


def record_file(cfg: Config, stage) -> Path | None:
    out = stage.outputs
    return out.folder(cfg) / layout.RECORD if out is not None and out.folder is not None else None


def read_record(folder: str | Path) -> dict | None:
    f = Path(folder) / layout.RECORD
    return read_json(f) if f.is_file() else None


def recorded(cfg: Config, stage) -> dict | None:
    f = record_file(cfg, stage)
    return read_record(f.parent) if f is not None else None


def stale(stage, where: Path, rec: dict | None, want: dict, note: str = "") -> StaleOutputError:
    return StaleOutputError(stage.name, str(where), changed(_settled(rec, want), want), stage.what, stage.redo_hint, note=note)


def check(stage, folder: Path, rec: dict | None, want: dict, has_outputs: bool) -> None:
    """Refuse a folder whose finished outputs were made under another record (or have none)."""
    if not has_outputs:
        return
    if rec is None:
        raise stale(stage, folder / layout.RECORD, None, want, note="no made_by.json beside them")
    if not same(rec, want):
        raise stale(stage, folder / layout.RECORD, rec, want)


def checked(cfg: Config, stage) -> dict:
    """A producing stage's record, which its outputs in this work_dir must match."""
    want = expected(cfg, stage)
    check(stage, stage.outputs.folder(cfg), recorded(cfg, stage), want, layout.has_outputs(cfg, stage.outputs))
    return want


def folder_input(cfg: Config, folder: str | Path, *owners) -> dict:
    """The record of a folder a stage reads: its owner's checked record when it is one of
    ``owners``' output folder in this work_dir; else the folder's own made_by.json (or its path)."""
    for owner in owners:
        if Path(folder).resolve() == owner.outputs.folder(cfg).resolve():
            return checked(cfg, owner)
    return read_record(folder) or {"folder": str(folder)}


def file_input(cfg: Config, path: str | Path, owner) -> dict:
    """The record of a file a stage reads: ``owner``'s checked record when ``owner`` made it
    in this work_dir; else the file's SHA-256 (or its path, while it does not exist)."""
    if layout.inside(path, owner.outputs.folder(cfg)):
        return checked(cfg, owner)
    return {"sha256": file_sha256(path)} if Path(path).is_file() else {"path": str(path)}


def consistent(cfg: Config, stage, record: Any) -> tuple[bool, list]:
    """Whether a stored record (a marker's) is what ``cfg`` expects of ``stage`` now, and what differs."""
    try:
        want = expected(cfg, stage)
    except StaleOutputError as e:
        return False, e.changes
    return same(record, want), changed(record if isinstance(record, dict) else {}, want)


# --------------------------------------------------------------------------
# what a stage does first, and after training
# --------------------------------------------------------------------------
def claim(stage, folder: Path, want: dict, has_outputs: bool, redo: bool, clear, fresh: bool = False) -> None:
    """Make ``folder`` hold ``stage``'s outputs under ``want``: outputs made under another
    record are refused, or with ``redo`` removed first by ``clear()`` (also all of them with
    ``fresh``: a training redo starts over), so a crash never leaves them under the new
    record; then a killed run's temporary files are removed and the record is written,
    before any output. Under torchrun rank 0 does it while the others wait."""
    from wsss.engine.distributed import barrier, is_main

    rec = read_record(folder)
    outdated = has_outputs and (rec is None or not same(rec, want))
    if redo and (fresh or outdated):
        barrier()  # every rank has read the old record before rank 0 removes it
        if is_main():
            clear()
        barrier()
        rec = None
    elif outdated:
        check(stage, folder, rec, want, has_outputs)
    if is_main():
        remove_stale_temps(folder)  # a killed run's, removed before any rank writes here
        if rec != want:
            atomic_write_json(folder / layout.RECORD, want)
    barrier()


def begin(cfg: Config, stage, redo: bool = False) -> dict:
    """Check what ``stage`` reads and what it would write over; returns its record.

    Producing stages: their outputs must match the record, or, with ``redo``, are removed
    first; then the record is written before any output. Evaluations: the record goes into
    their metrics files (wsss.reports.recording).
    """
    try:
        want = expected(cfg, stage)
    except StaleOutputError as e:
        if e.stage == stage.name or not stage.also_on_stale:
            raise
        raise e.with_also(stage.also_on_stale(cfg)) from None
    out = stage.outputs
    if out is not None and out.folder is not None:
        claim(stage, out.folder(cfg), want, layout.has_outputs(cfg, out), redo, lambda: layout.clear(cfg, out),
              fresh=stage.training)
    return want


def settle(cfg: Config, stage) -> None:
    """After a training stage: its record with the files it made itself (a pretrained start)
    filled in by content, so later stages compare like with like."""
    from wsss.engine.distributed import is_main

    want, rec = expected(cfg, stage), recorded(cfg, stage)
    if is_main() and rec != want and same(rec, want):
        atomic_write_json(record_file(cfg, stage), want)


def has_extra_phases(cfg: Config) -> bool:
    from wsss.registry import extra_phase_providers

    return any(provider(cfg) for provider in extra_phase_providers())


__all__ = ["StaleOutputError", "begin", "changed", "check", "checked", "claim", "consistent", "digest", "expected",
           "file_identity", "file_input", "file_sha256", "flatten", "folder_input", "is_harmless", "method_sections",
           "recorded", "same", "settle", "show", "stage_keys"]
