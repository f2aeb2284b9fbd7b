"""Class names and the pickle-free image-level label file.

Label file (JSON)::

    {"format": "wsss-cls-labels/1",
     "classes": ["aeroplane", ...],            # K foreground classes, index 0..K-1
     "labels": {"2007_000032": [0, 14], ...}}  # foreground class indices per image id
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.fileio import DataError, atomic_write_json, read_json, validate_id

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

# COCO 2014's 80 categories in the order of their (non-contiguous) official ids.
COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
COCO_CATEGORY_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
]

LABEL_FORMAT = "wsss-cls-labels/1"


class ImageLabels:
    """Image-level labels of a dataset: class names and per-id class indices."""

    def __init__(self, classes: list[str], labels: dict[str, list[int]], source: str = ""):
        self.classes = list(classes)
        self.labels = labels
        self.source = source

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.labels

    def indices(self, image_id: str) -> list[int]:
        try:
            return self.labels[image_id]
        except KeyError:
            raise DataError(f"{self.source or 'label file'}: no image-level labels for id {image_id!r}") from None

    def multi_hot(self, image_id: str) -> np.ndarray:
        v = np.zeros(self.num_classes, dtype=np.float32)
        v[self.indices(image_id)] = 1.0
        return v

    def check_ids(self, ids: list[str], split_name: str = "") -> None:
        missing = [i for i in ids if i not in self.labels]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{self.source}: id {missing[0]!r} of split {split_name or '?'} has no image-level labels{more}")

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"format": LABEL_FORMAT, "classes": self.classes, "labels": self.labels})

    @classmethod
    def load(cls, path: str | os.PathLike, num_classes: int | None = None) -> "ImageLabels":
        path = Path(path)
        if path.suffix.lower() != ".json":
            # IRN-style cls_labels.npy holds a pickled dict: we never unpickle
            raise DataError(f"{path}: refused: label files are JSON (a {path.suffix} label file would need unpickling); "
                            "build one with scripts/prepare_voc.py")
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != LABEL_FORMAT:
            raise DataError(f"{path}: not a label file (expected format {LABEL_FORMAT!r}; run scripts/prepare_voc.py)")
        classes = data.get("classes")
        labels = data.get("labels")
        if not isinstance(classes, list) or not isinstance(labels, dict):
            raise DataError(f"{path}: label file needs 'classes' (list) and 'labels' (mapping)")
        k = len(classes)
        if num_classes is not None and k != num_classes:
            raise DataError(f"{path}: has {k} classes but data.num_classes is {num_classes}")
        clean: dict[str, list[int]] = {}
        for image_id, idx in labels.items():
            validate_id(image_id, path)
            if not isinstance(idx, list) or not all(isinstance(i, int) and 0 <= i < k for i in idx):
                raise DataError(f"{path}: labels of {image_id!r} must be class indices in 0..{k - 1}, got {idx!r}")
            clean[image_id] = sorted(set(idx))
        return cls(classes, clean, str(path))
