"""Datasets over the VOC layout (COCO is converted into it): classification,
segmentation and inference.

Training datasets take either an int index or an ``(index, seed)`` pair from
:class:`wsss.engine.sampler.ResumableSampler`; the seed drives the sample's
augmentation, so a resumed run sees exactly the batches an uninterrupted run
would.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from wsss.data.labels import ImageLabels
from wsss.data.transforms import TrainTransform, multiscale_inputs
from wsss.data.voc import VOCLayout
from wsss.fileio import DataError, read_image, read_mask


def _split_index(item) -> tuple[int, np.random.Generator]:
    if isinstance(item, (tuple, list)):
        index, seed = int(item[0]), int(item[1])
        return index, np.random.default_rng([seed, index])
    index = int(item)
    return index, np.random.default_rng([0, index])


def load_image_and_mask(layout: VOCLayout, image_id: str, mask_dir: str | None, num_classes: int):
    img = read_image(layout.image(image_id))
    if mask_dir is None:
        return img, None
    mask_path = layout.mask(image_id, mask_dir)
    mask = read_mask(mask_path, num_classes)
    if mask.shape != img.shape[:2]:
        raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image {layout.image(image_id)} size {img.shape[1]}x{img.shape[0]}")
    return img, mask


def image_size(path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def check_masks(layout: VOCLayout, ids: list[str], mask_dir: str, split_name: str = "") -> None:
    """Before training starts: every id has a mask, of its image's size (headers only)."""
    for image_id in ids:
        p = layout.mask(image_id, mask_dir)
        if not p.is_file():
            raise DataError(f"{p}: mask file not found (id {image_id!r} of split {split_name or '?'})")
        ms, im = image_size(p), image_size(layout.image(image_id))
        if ms != im:
            raise DataError(f"{p}: mask size {ms[0]}x{ms[1]} differs from image {layout.image(image_id)} size {im[0]}x{im[1]}")


class _TrainBase(Dataset):
    def __init__(self, root, ids: list[str], transform: TrainTransform, num_classes: int,
                 labels: ImageLabels | None = None, mask_dir: str | None = None, split_name: str = ""):
        self.layout = VOCLayout(root)
        self.ids = list(ids)
        if not self.ids:
            raise DataError(f"{self.layout.split_file(split_name or '?')}: split list is empty")
        self.transform = transform
        self.labels = labels
        self.mask_dir = mask_dir
        self.num_classes = num_classes
        self.layout.check_images(self.ids, split_name)
        if labels is not None:
            labels.check_ids(self.ids, split_name)
        if mask_dir is not None:
            check_masks(self.layout, self.ids, mask_dir, split_name)

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, item) -> dict:
        index, rng = _split_index(item)
        image_id = self.ids[index]
        img, mask = load_image_and_mask(self.layout, image_id, self.mask_dir, self.num_classes)
        img_t, mask_t = self.transform(img, mask, rng)
        out = {"img": img_t, "id": image_id}
        if mask_t is not None:
            out["mask"] = mask_t
        if self.labels is not None:
            out["label"] = torch.from_numpy(self.labels.multi_hot(image_id))
        return out


class ClassificationDataset(_TrainBase):
    """Image + multi-hot label (+ a mask such as a pseudo mask, when ``mask_dir`` is given)."""

    def __init__(self, root, ids, labels: ImageLabels, transform: TrainTransform, mask_dir: str | None = None, split_name: str = ""):
        super().__init__(root, ids, transform, labels.num_classes, labels=labels, mask_dir=mask_dir, split_name=split_name)

    def __getitem__(self, item) -> dict:
        return self._load(item)


class SegmentationDataset(_TrainBase):
    """Image + label mask (GT or pseudo mask), transformed jointly; pad value 255."""

    def __init__(self, root, ids, mask_dir: str, transform: TrainTransform, num_classes: int, split_name: str = ""):
        super().__init__(root, ids, transform, num_classes, labels=None, mask_dir=mask_dir, split_name=split_name)

    def __getitem__(self, item) -> dict:
        return self._load(item)


class InferenceDataset(Dataset):
    """Original-size image + id + labels, and the normalised multi-scale inputs.

    Resizing and normalisation run here, in the loader workers, so they overlap
    with the network's compute.
    """

    def __init__(self, root, ids: list[str], labels: ImageLabels | None, scales=(1.0,), mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), resize_mode: str = "bicubic", split_name: str = "", gt_dir: str | None = None,
                 num_classes: int | None = None):
        self.layout = VOCLayout(root)
        self.ids = list(ids)
        if not self.ids:
            raise DataError(f"{self.layout.split_file(split_name or '?')}: split list is empty")
        self.labels = labels
        self.scales = list(scales)
        self.mean, self.std = list(mean), list(std)
        self.resize_mode = resize_mode
        self.gt_dir = gt_dir
        self.num_classes = num_classes if num_classes is not None else (labels.num_classes if labels else None)
        self.layout.check_images(self.ids, split_name)
        if labels is not None:
            labels.check_ids(self.ids, split_name)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        img, gt = load_image_and_mask(self.layout, image_id, self.gt_dir, self.num_classes)
        out = {
            "id": image_id,
            "image": img,
            "inputs": multiscale_inputs(img, self.scales, self.mean, self.std, self.resize_mode),
        }
        if gt is not None:
            out["gt"] = gt
        if self.labels is not None:
            out["label"] = self.labels.multi_hot(image_id)
        return out


def collate_single(batch: list[dict]) -> dict:
    """Inference loaders use batch_size=1 and keep the raw sample."""
    assert len(batch) == 1
    return batch[0]
