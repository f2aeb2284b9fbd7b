"""What method packages plug into: their config sections, CAM models, training phases, outputs.

The registry knows names and factories only; it imports no other module of the
project by name. A factory is a callable, or a ``"package.module:attribute"``
reference that is imported the first time it is used, so a method package can
register everything from a light ``__init__`` and loading a YAML config does not
import torch or the models.

Method packages (``ppl_wsss``, ``gslm``) are found through the ``wsss.methods``
entry-point group of the installed distribution and imported once; importing
them registers their pieces. Scripts and the shared layer never branch on method
names: they ask this registry. docs/adding_a_method.md walks through it.
"""
from __future__ import annotations

import dataclasses
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Union

from wsss.errors import ConfigError

# a callable, or "package.module:attribute" imported on first use
Factory = Union[Callable[..., Any], str]

_SECTIONS: dict[str, type] = {}
_SECTION_USED: dict[str, Callable[[dict], bool]] = {}  # optional sections: when a config has them
_MODELS: dict[str, Factory] = {}
_PHASE_PLANS: dict[str, Factory] = {}
_EXTRA_PHASES: list[Factory] = []
_CAM_SOURCES: list[Factory] = []
_SUMMARY_EXTRAS: list[Factory] = []
_BENCH_PHASES: list[Factory] = []
_PLUGINS_LOADED = False
_MODELS_LOADED = False

# the shared layer's own models (imported only when a model is looked up: they import torch)
_SHARED_MODELS = ("wsss.models.cam_net",)


def import_plugins() -> None:
    """Import every installed method package, once."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in sorted(entry_points(group="wsss.methods"), key=lambda e: e.name):
        import_module(ep.value)


def _import_models() -> None:
    global _MODELS_LOADED
    import_plugins()
    if _MODELS_LOADED:
        return
    _MODELS_LOADED = True
    for name in _SHARED_MODELS:
        import_module(name)


def resolve(factory: Factory) -> Callable[..., Any]:
    """The callable behind a factory (imports a ``"module:attribute"`` reference)."""
    if callable(factory):
        return factory
    module, sep, attr = factory.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"factory reference {factory!r} is not of the form 'package.module:attribute'")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _add(registry: list[Factory], fn: Factory) -> Factory:
    if fn not in registry:
        registry.append(fn)
    return fn


# --------------------------------------------------------------------------
# config sections
# --------------------------------------------------------------------------
def register_section(name: str, schema: type, used: Callable[[dict], bool] | None = None, optional: bool = False) -> type:
    """Declare a method's top-level config section (a dataclass); the shared sections are
    :mod:`wsss.config.schema`'s.

    ``wsss.config`` builds ``cfg.<name>`` from it when a config is loaded (from the
    YAML's ``<name>:`` mapping, or from the dataclass's defaults). With ``optional`` or
    ``used``, it is in the config only when the YAML (or an override) sets it, or when
    ``used(tree)`` says the config needs it (e.g. its model is the method's), so a baseline
    run's resolved config carries no method's keys."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"config section {name!r} must be a dataclass")
    if name in _SECTIONS and _SECTIONS[name] is not schema:
        raise ValueError(f"config section {name!r} registered twice")
    _SECTIONS[name] = schema
    if optional or used is not None:
        _SECTION_USED[name] = used or (lambda tree: False)
    return schema


def section_present(name: str, tree: dict) -> bool:
    """Whether a config built from ``tree`` (the merged YAML) has the registered section ``name``."""
    return name in tree or name not in _SECTION_USED or bool(_SECTION_USED[name](tree))


def config_sections() -> dict[str, type]:
    """Every registered section, in registration order (plugins imported first)."""
    import_plugins()
    return dict(_SECTIONS)


# --------------------------------------------------------------------------
# models and training phases
# --------------------------------------------------------------------------
def register_model(name: str, phase_plan: Factory | None = None, builder: Factory | None = None):
    """Register a CAM model builder ``fn(cfg) -> nn.Module``.

    ``phase_plan(cfg) -> list[Phase]`` gives the model's own training phases
    (default: one phase with the config's ``train`` section). With ``builder``
    (e.g. ``"my_method.model:build"``) it registers at once; without, it is a
    decorator for the builder function.
    """

    def deco(fn):
        if name in _MODELS and _MODELS[name] != fn:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        if phase_plan is not None:
            _PHASE_PLANS[name] = phase_plan
        return fn

    if builder is not None:
        return deco(builder)
    return deco


def model_builder(name: str) -> Callable[..., Any]:
    _import_models()
    if name not in _MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    return resolve(_MODELS[name])


def model_phase_plan(name: str) -> Callable[..., list] | None:
    _import_models()
    plan = _PHASE_PLANS.get(name)
    return resolve(plan) if plan is not None else None


def registered_models() -> list[str]:
    _import_models()
    return sorted(_MODELS)


def register_extra_phases(fn: Factory) -> Factory:
    """``fn(cfg) -> list[Phase]`` appended after the model's phases (GSLM's rounds)."""
    return _add(_EXTRA_PHASES, fn)


def extra_phase_providers() -> list[Callable[..., list]]:
    import_plugins()
    return [resolve(fn) for fn in _EXTRA_PHASES]


# --------------------------------------------------------------------------
# what training writes besides the weights
# --------------------------------------------------------------------------
def register_cam_source(fn: Factory) -> Factory:
    """``fn(cfg) -> list[Path]``: folders where training may already have written the final
    model's CAMs (GSLM's last round). make_cam links files from a folder whose
    ``made_by.json`` matches its own weights and settings instead of recomputing them."""
    return _add(_CAM_SOURCES, fn)


def cam_sources(cfg: Any) -> list:
    import_plugins()
    return [d for fn in _CAM_SOURCES for d in resolve(fn)(cfg)]


def register_summary_extra(fn: Factory) -> Factory:
    """``fn(cfg) -> dict``: entries a method's training wrote beside the weights (GSLM's
    per-round table), added to run_pipeline's summary when train_cam's outputs are this
    config's; ``{}`` when there is nothing to add."""
    return _add(_SUMMARY_EXTRAS, fn)


def summary_extras(cfg: Any) -> dict:
    import_plugins()
    out: dict = {}
    for fn in _SUMMARY_EXTRAS:
        out.update(resolve(fn)(cfg))
    return out


# --------------------------------------------------------------------------
# measuring from outside (scripts/benchmark.py)
# --------------------------------------------------------------------------
def register_bench_phase(fn: Factory) -> Factory:
    """``fn(cfg) -> Phase | None``: the training phase the benchmark times for this config
    when the method's costliest step is not the model's first phase (GSLM: an SLM round,
    with inputs that need no earlier round); None leaves the choice to the next provider."""
    return _add(_BENCH_PHASES, fn)


def bench_phase(cfg: Any) -> Any:
    """The first phase a registered provider offers for ``cfg``, or None."""
    import_plugins()
    for fn in _BENCH_PHASES:
        phase = resolve(fn)(cfg)
        if phase is not None:
            return phase
    return None
