"""GSLM: General / Specific Learning Modules with Seed Reactivation.

Importing the package registers its config section (``gslm``), its extra training
phases (the SLM rounds, appended after the GLM's own phases), the folder of the last
round's CAMs, the per-round table for the pipeline's summary and the phase the
benchmark times. The heavy modules are imported when first used, so loading a
config imports no torch.
"""
from gslm.config import GSLMConfig
from gslm.outputs import last_round_cams, rounds_summary
from wsss.registry import (register_bench_phase, register_cam_source, register_extra_phases, register_section,
                           register_summary_extra)

register_section("gslm", GSLMConfig, optional=True)  # in a config only when it sets gslm:
register_extra_phases("gslm.slm:slm_phases")
register_cam_source(last_round_cams)
register_summary_extra(rounds_summary)
register_bench_phase("gslm.slm:bench_phase")

__all__ = ["seed_reactivation_loss"]


def __getattr__(name: str):
    if name == "seed_reactivation_loss":
        from gslm.loss import seed_reactivation_loss

        return seed_reactivation_loss
    raise AttributeError(f"module 'gslm' has no attribute {name!r}")
