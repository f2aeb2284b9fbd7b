"""GSLM: General / Specific Learning Modules with Seed Reactivation.

Importing the package registers its config section (``gslm``) and its extra
training phases (the SLM rounds, appended after the GLM's own phases).
"""
from gslm import slm  # noqa: F401
from gslm.loss import seed_reactivation_loss

__all__ = ["seed_reactivation_loss"]
