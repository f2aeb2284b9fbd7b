"""Progressive Patch Learning (PPL) for weakly supervised semantic segmentation."""
