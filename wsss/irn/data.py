"""train_irn's data: the image and its pseudo mask at stride 4 (the relation labels' source).

The reference's VOC12AffinityDataset: random rescale (image bicubic, mask nearest),
normalise, flip, random crop (image 0, mask 255), then the mask reduced x1/4 with PIL
nearest (``round(side / 4)``). The pair labels themselves are computed on the batch
(:func:`wsss.irn.indexing.relation_labels`) rather than here: the reference collates
three float tensors of [n_offsets, n_sources] per image (23 MB at crop 512), the
reduced mask is 16 KB.
"""
from __future__ import annotations

import numpy as np
import torch

from wsss.config import AugConfig
from wsss.data.datasets import SegmentationDataset
from wsss.data.transforms import TrainTransform, resize_mask, scaled_size


def reduce_mask(mask: np.ndarray, stride: int = 4) -> np.ndarray:
    """A uint8 mask at 1/stride (PIL nearest, sides rounded), as the reference's pil_rescale."""
    return resize_mask(mask, scaled_size(mask.shape[0], mask.shape[1], 1.0 / stride))


class AffinityDataset(SegmentationDataset):
    """``{"img": [3, S, S], "label": [S/4, S/4] int64, "id"}`` with ``aug``'s augmentation."""

    def __init__(self, root, ids, mask_dir: str, aug: AugConfig, num_classes: int, split_name: str = ""):
        if aug.crop_size <= 0 or aug.crop_size % 4:
            raise ValueError(f"irn.aug.crop_size must be a positive multiple of 4, got {aug.crop_size}")
        super().__init__(root, ids, mask_dir, TrainTransform(aug), num_classes, split_name=split_name)

    def __getitem__(self, item) -> dict:
        out = self._load(item)
        mask = out.pop("mask").numpy().astype(np.uint8)
        out["label"] = torch.from_numpy(reduce_mask(mask).astype(np.int64))
        return out
