"""What method packages plug into: CAM models, training phases, config sections.

Method packages (``ppl_wsss``, ``gslm``) are found through the ``wsss.methods``
entry-point group of the installed distribution and imported once; importing
them registers their pieces. Scripts never branch on method names: they ask
this registry.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable

_MODELS: dict[str, Callable[..., Any]] = {}
_PHASE_PLANS: dict[str, Callable[..., list]] = {}
_EXTRA_PHASES: list[Callable[..., list]] = []
_FINALIZERS: list[Callable[[Any], None]] = []
_CAM_SOURCES: list[Callable[[Any], list]] = []
_PLUGINS_LOADED = False


def import_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    # the shared layer's own registrations
    import_module("wsss.models.cam_net")
    import_module("wsss.seg.config")
    import_module("wsss.pipeline_config")
    import_module("wsss.pretrain")
    for ep in sorted(entry_points(group="wsss.methods"), key=lambda e: e.name):
        import_module(ep.value)


def register_model(name: str, phase_plan: Callable[..., list] | None = None):
    """Register a CAM model builder ``fn(cfg) -> nn.Module``.

    ``phase_plan(cfg) -> list[Phase]`` gives the model's own training phases
    (default: one phase with the config's ``train`` section).
    """

    def deco(fn):
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        if phase_plan is not None:
            _PHASE_PLANS[name] = phase_plan
        return fn

    return deco


def model_builder(name: str) -> Callable[..., Any]:
    import_plugins()
    if name not in _MODELS:
        from wsss.config import ConfigError

        raise ConfigError(f"model.name: unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def model_phase_plan(name: str) -> Callable[..., list] | None:
    import_plugins()
    return _PHASE_PLANS.get(name)


def register_extra_phases(fn: Callable[..., list]) -> Callable[..., list]:
    """``fn(cfg) -> list[Phase]`` appended after the model's phases (GSLM's rounds)."""
    if fn not in _EXTRA_PHASES:
        _EXTRA_PHASES.append(fn)
    return fn


def extra_phase_providers() -> list[Callable[..., list]]:
    import_plugins()
    return list(_EXTRA_PHASES)


def register_finalizer(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """``fn(cfg)`` fills derived defaults of a registered config section."""
    if fn not in _FINALIZERS:
        _FINALIZERS.append(fn)
    return fn


def run_finalizers(cfg: Any) -> None:
    for fn in _FINALIZERS:
        fn(cfg)


def register_cam_source(fn: Callable[[Any], list]) -> Callable[[Any], list]:
    """``fn(cfg) -> list[Path]``: folders where training may already have written the final
    model's CAMs (GSLM's last round). make_cam links files from a folder whose
    ``made_by.json`` matches its own weights and settings instead of recomputing them."""
    if fn not in _CAM_SOURCES:
        _CAM_SOURCES.append(fn)
    return fn


def cam_sources(cfg: Any) -> list:
    import_plugins()
    return [d for fn in _CAM_SOURCES for d in fn(cfg)]


def registered_models() -> list[str]:
    import_plugins()
    return sorted(_MODELS)
