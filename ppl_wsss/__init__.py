"""Progressive Patch Learning (PPL) for weakly supervised semantic segmentation.

Importing the package registers its config section (``ppl``) and its models
(``ppl_progressive``, ``ppl_explicit``) with the shared layer; the models are
imported when a config names them, so loading a config imports no torch. What P,
M, C and the two variants compute, and their exact guarantees: docs/ppl.md.
"""
from ppl_wsss.config import PPLConfig, uses_ppl
from wsss.registry import register_model, register_section

register_section("ppl", PPLConfig, used=uses_ppl)  # in a config that sets ppl: or uses a PPL model
register_model("ppl_explicit", builder="ppl_wsss.method:build_ppl_explicit")
register_model("ppl_progressive", phase_plan="ppl_wsss.method:progressive_phases",
               builder="ppl_wsss.method:build_ppl_progressive")

__all__ = ["PPLNet", "PatchInfo", "axis_layout", "split_patches", "merge_patches"]
_LAZY = {"PPLNet": "ppl_wsss.model", "PatchInfo": "ppl_wsss.patch", "axis_layout": "ppl_wsss.patch",
         "split_patches": "ppl_wsss.patch", "merge_patches": "ppl_wsss.patch"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ppl_wsss' has no attribute {name!r}")
