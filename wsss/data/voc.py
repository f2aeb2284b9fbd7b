"""PASCAL VOC 2012 in its distributed layout, and the split / label preparation.

    <root>/JPEGImages/<id>.jpg
    <root>/Annotations/<id>.xml
    <root>/SegmentationClass/<id>.png        GT of train + val (boundaries = 255)
    <root>/SegmentationClassAug/<id>.png     SBD-derived GT of train_aug (optional)
    <root>/ImageSets/Segmentation/{train,val,test,train_aug}.txt
    <root>/cls_labels.json                    written by prepare_voc (image-level labels)
    <root>/PartMasks/<id>.png                 synthetic data only: each object's part (c+1)

COCO 2014 is converted into the same layout by ``prepare_coco``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from wsss.data.labels import VOC_CLASSES, ImageLabels
from wsss.fileio import DataError, read_id_list, validate_id, write_id_list

# Sizes of the standard VOC 2012 + SBD splits (mmseg's converter asserts the same).
STANDARD_SIZES = {"train": 1464, "val": 1449, "test": 1456, "train_aug": 10582}


@dataclass(frozen=True)
class VOCLayout:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def image_dir(self) -> Path:
        return self.root / "JPEGImages"

    @property
    def annotation_dir(self) -> Path:
        return self.root / "Annotations"

    @property
    def split_dir(self) -> Path:
        return self.root / "ImageSets" / "Segmentation"

    def image(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id}.jpg"

    @property
    def part_dir(self) -> Path:
        """The synthetic data's part masks (VOC and COCO have none)."""
        return self.root / "PartMasks"

    @property
    def decoy_dir(self) -> Path:
        """The synthetic data's decoy masks (1 a decoy's visible body, 2 its part; scenes with decoys)."""
        return self.root / "DecoyMasks"

    def annotation(self, image_id: str) -> Path:
        return self.annotation_dir / f"{image_id}.xml"

    def mask(self, image_id: str, mask_dir: str = "SegmentationClass") -> Path:
        """``mask_dir``: a bare folder name lies under the root (``SegmentationClassAug``);
        a path (absolute, or relative with a separator: ``work_dirs/x/pseudo``) is used as is."""
        d = Path(mask_dir)
        if not d.is_absolute() and len(d.parts) == 1:
            d = self.root / d
        return d / f"{image_id}.png"

    def split_file(self, split: str) -> Path:
        return self.split_dir / f"{split}.txt"

    def read_split(self, split: str) -> list[str]:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data root does not exist")
        return read_id_list(self.split_file(split))

    def check_images(self, ids: list[str], split: str = "") -> None:
        """Fail before any work starts when an id of the split has no image."""
        for image_id in ids:
            if not self.image(image_id).is_file():
                raise DataError(f"{self.image(image_id)}: image file not found (id {image_id!r} of split {split or '?'})")


def parse_annotation(path: str | os.PathLike, classes: list[str]) -> list[int]:
    """Foreground class indices named by the objects of a VOC XML annotation.

    All objects count, 'difficult' ones included, as in the IRN/GSLM label file;
    part names (head, hand, ...) are not classes and are skipped.
    """
    path = Path(path)
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except ET.ParseError as e:
        raise DataError(f"{path}: unreadable annotation XML ({e})") from None
    index = {name: i for i, name in enumerate(classes)}
    found = set()
    for obj in tree.getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DataError(f"{path}: object name {name!r} is not a known class")
        found.add(index[name])
    return sorted(found)


def build_train_aug(layout: VOCLayout, val_ids: list[str], sbd_root: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """train_aug = (SBD train + SBD val + VOC train) - VOC val, or SegmentationClassAug - VOC val."""
    val = set(val_ids)
    if sbd_root is not None:
        sbd = Path(sbd_root)
        lists = [sbd / "dataset" / "train.txt", sbd / "dataset" / "val.txt"]
        for p in lists:
            if not p.is_file():
                raise DataError(f"{p}: SBD split list not found (expected <sbd_root>/dataset/train.txt and val.txt)")
        ids = set()
        for p in lists:
            ids.update(read_id_list(p))
        voc_train = layout.split_file("train")
        if voc_train.is_file():
            ids.update(read_id_list(voc_train))
        source = f"SBD lists in {sbd} + VOC train"
    else:
        aug_dir = layout.root / "SegmentationClassAug"
        if not aug_dir.is_dir():
            raise DataError(f"{aug_dir}: not found; give --sbd-root or put SegmentationClassAug under the VOC root")
        ids = {validate_id(p.stem, aug_dir) for p in aug_dir.glob("*.png") if not p.name.startswith(".")}
        source = str(aug_dir)
    return sorted(ids - val), source


def prepare_voc(root: str | os.PathLike, sbd_root: str | os.PathLike | None = None, classes: list[str] | None = None,
                label_file: str | os.PathLike | None = None, strict_standard: bool = True) -> dict:
    """Write train_aug.txt and the label file; return a report of what was written and what is missing."""
    layout = VOCLayout(root)
    if not layout.root.is_dir():
        raise DataError(f"{layout.root}: data root does not exist")
    classes = classes or VOC_CLASSES
    splits: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        if layout.split_file(split).is_file():
            splits[split] = read_id_list(layout.split_file(split))
    for split in ("train", "val"):
        if split not in splits:
            raise DataError(f"{layout.split_file(split)}: split list not found")
    train_aug, source = build_train_aug(layout, splits["val"], sbd_root)
    splits["train_aug"] = train_aug

    standard = len(splits["train"]) == STANDARD_SIZES["train"] and len(splits["val"]) == STANDARD_SIZES["val"]
    if standard and strict_standard and len(train_aug) != STANDARD_SIZES["train_aug"]:
        raise DataError(
            f"{layout.split_file('train_aug')}: standard VOC 2012 + SBD gives 10,582 train_aug ids, got {len(train_aug)} from {source}"
        )
    write_id_list(layout.split_file("train_aug"), train_aug)

    labelled = sorted(set(splits["train_aug"]) | set(splits["train"]) | set(splits["val"]))
    labels: dict[str, list[int]] = {}
    missing: dict[str, list[str]] = {"images": [], "annotations": [], "SegmentationClass": [], "SegmentationClassAug": []}
    for image_id in labelled:
        if not layout.image(image_id).is_file():
            missing["images"].append(image_id)
        if not layout.annotation(image_id).is_file():
            missing["annotations"].append(image_id)
            continue
        labels[image_id] = parse_annotation(layout.annotation(image_id), classes)
    for split in ("train", "val"):
        missing["SegmentationClass"] += [i for i in splits[split] if not layout.mask(i).is_file()]
    if (layout.root / "SegmentationClassAug").is_dir():
        missing["SegmentationClassAug"] = [i for i in train_aug if not layout.mask(i, "SegmentationClassAug").is_file()]
    if "test" in splits:
        missing["images"] += [i for i in splits["test"] if not layout.image(i).is_file()]
    label_path = Path(label_file) if label_file else layout.root / "cls_labels.json"
    ImageLabels(classes, labels).save(label_path)
    no_label = [i for i in labelled if i in labels and not labels[i]]
    return {
        "root": str(layout.root),
        "train_aug_source": source,
        "standard_voc": standard,
        "counts": {k: len(v) for k, v in splits.items()},
        "label_file": str(label_path),
        "labelled_ids": len(labels),
        "ids_without_objects": no_label,
        "missing": {k: v for k, v in missing.items()},
    }
