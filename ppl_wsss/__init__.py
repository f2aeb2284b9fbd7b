"""Progressive Patch Learning (PPL) for weakly supervised semantic segmentation.

Importing the package registers its config section (``ppl``) and its models
(``ppl_progressive``, ``ppl_explicit``) with the shared layer. What P, M, C and the
two variants compute, and their exact guarantees: docs/ppl.md.
"""
from ppl_wsss import method  # noqa: F401
from ppl_wsss.model import PPLNet
from ppl_wsss.patch import PatchInfo, axis_layout, merge_patches, split_patches

__all__ = ["PPLNet", "PatchInfo", "axis_layout", "split_patches", "merge_patches"]
