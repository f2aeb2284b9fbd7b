"""Progressive Patch Learning (PPL) for weakly supervised semantic segmentation.

Importing the package registers its config section (``ppl``) and its models
(``ppl_progressive``, ``ppl_explicit``) with the shared layer.
"""
from ppl_wsss import method  # noqa: F401
from ppl_wsss.model import PPLNet
from ppl_wsss.patch import merge_patches, split_patches

__all__ = ["PPLNet", "split_patches", "merge_patches"]
