"""MS COCO 2014 -> the VOC layout, so every later stage is dataset-agnostic.

Input (the official distribution)::

    <coco_root>/train2014/*.jpg, val2014/*.jpg
    <coco_root>/annotations/instances_train2014.json, instances_val2014.json

Output::

    <out>/JPEGImages/<id>.jpg           symlinks to the originals (or copies)
    <out>/SegmentationClass/<id>.png    palette PNG: 0 background, 1..80 classes, 255 crowd
    <out>/ImageSets/Segmentation/{train,val}.txt
    <out>/cls_labels.json

Ids are the file stems (``COCO_train2014_000000000009``). Categories map to
1..80 in the order of their official ids. Overlaps: non-crowd instances are
painted in decreasing area, so a smaller object lying on a larger one stays
visible; crowd regions become 255 where no non-crowd instance covers them.
Image-level labels are the categories of all the image's annotations, crowd
included. Images with no annotation are left out of the id lists (a
classifier needs at least one label) and counted in the report.
"""
from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np

from wsss.data.labels import ImageLabels
from wsss.fileio import DataError, read_json, write_id_list, write_palette_png
from wsss.parallel import imap_unordered

SPLITS = {"train": "train2014", "val": "val2014"}


def _require_pycocotools():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise DataError("prepare_coco needs pycocotools: pip install 'wsss-ppl-gslm[coco]'") from None
    return mask_utils


def annotation_mask(ann: dict, h: int, w: int) -> np.ndarray:
    mask_utils = _require_pycocotools()
    seg = ann["segmentation"]
    if isinstance(seg, list):
        if not seg:
            return np.zeros((h, w), bool)
        rles = mask_utils.frPyObjects(seg, h, w)
        rle = mask_utils.merge(rles)
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def render_mask(anns: list[dict], h: int, w: int, cat_to_label: dict[int, int]) -> np.ndarray:
    """The documented overlap rule: non-crowd largest first (smaller on top); crowd -> 255 where uncovered."""
    out = np.zeros((h, w), np.uint8)
    covered = np.zeros((h, w), bool)
    for ann in sorted((a for a in anns if not a.get("iscrowd", 0)), key=lambda a: -float(a.get("area", 0))):
        m = annotation_mask(ann, h, w)
        out[m] = cat_to_label[ann["category_id"]]
        covered |= m
    for ann in (a for a in anns if a.get("iscrowd", 0)):
        m = annotation_mask(ann, h, w) & ~covered
        out[m] = 255
    return out


def _convert_one(item: tuple, out: str, cat_to_label: dict[int, int]) -> str:
    image_id, h, w, anns = item
    write_palette_png(Path(out) / "SegmentationClass" / f"{image_id}.png", render_mask(anns, h, w, cat_to_label))
    return image_id


def _link(src: Path, dst: Path, mode: str) -> None:
    if dst.exists() or dst.is_symlink():
        return
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        shutil.copyfile(src, dst)


def prepare_coco(coco_root: str | os.PathLike, out: str | os.PathLike, workers: int = 0, link: str = "symlink",
                 redo: bool = False) -> dict:
    _require_pycocotools()
    coco_root, out = Path(coco_root), Path(out)
    if not coco_root.is_dir():
        raise DataError(f"{coco_root}: COCO root does not exist")
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    classes: list[str] | None = None
    cat_to_label: dict[int, int] = {}
    labels: dict[str, list[int]] = {}
    report: dict = {"coco_root": str(coco_root), "out": str(out), "splits": {}}
    for split, coco_name in SPLITS.items():
        ann_path = coco_root / "annotations" / f"instances_{coco_name}.json"
        doc = read_json(ann_path)
        for key in ("images", "annotations", "categories"):
            if key not in doc:
                raise DataError(f"{ann_path}: missing '{key}'")
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in cats]
        if classes is None:
            classes = names
            cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        elif names != classes:
            raise DataError(f"{ann_path}: categories differ from the train split's")
        by_image: dict[int, list[dict]] = {}
        for ann in doc["annotations"]:
            if ann["category_id"] not in cat_to_label:
                raise DataError(f"{ann_path}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            by_image.setdefault(ann["image_id"], []).append(ann)
        ids, items, missing, empty = [], [], [], 0
        for im in sorted(doc["images"], key=lambda i: i["file_name"]):
            anns = by_image.get(im["id"], [])
            if not anns:
                empty += 1
                continue
            src = coco_root / coco_name / im["file_name"]
            if not src.is_file():
                missing.append(str(src))
                continue
            image_id = Path(im["file_name"]).stem
            ids.append(image_id)
            labels[image_id] = sorted({cat_to_label[a["category_id"]] - 1 for a in anns})
            _link(src, out / "JPEGImages" / f"{image_id}.jpg", link)
            if redo or not (out / "SegmentationClass" / f"{image_id}.png").is_file():
                items.append((image_id, int(im["height"]), int(im["width"]), anns))
        for _ in imap_unordered(partial(_convert_one, out=str(out), cat_to_label=cat_to_label), items, workers, chunksize=16):
            pass
        write_id_list(out / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
        report["splits"][split] = {"images": len(ids), "masks_written": len(items), "without_annotations": empty,
                                   "missing_images": len(missing), "first_missing": missing[:5]}
    assert classes is not None
    ImageLabels(classes, labels).save(out / "cls_labels.json")
    report["classes"] = len(classes)
    report["label_file"] = str(out / "cls_labels.json")
    return report
