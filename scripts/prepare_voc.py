#!/usr/bin/env python
"""Build VOC 2012's train_aug list and the image-level label file, and report what is there.

    python scripts/prepare_voc.py --root data/VOCdevkit/VOC2012 --sbd-root data/SBD/benchmark_RELEASE
    python scripts/prepare_voc.py --root data/VOCdevkit/VOC2012          # uses SegmentationClassAug/

train_aug = (SBD train + SBD val + VOC train) - VOC val, or the SegmentationClassAug
masks minus VOC val; on the standard data this must give 10,582 ids.
Writes <root>/ImageSets/Segmentation/train_aug.txt and <root>/cls_labels.json.
"""
import argparse
import json

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the VOC2012 folder (JPEGImages, Annotations, ImageSets, ...)")
    p.add_argument("--sbd-root", default=None, help="SBD's benchmark_RELEASE folder (holds dataset/train.txt, val.txt)")
    p.add_argument("--label-file", default=None, help="default: <root>/cls_labels.json")
    p.add_argument("--allow-nonstandard", action="store_true", help="do not insist on 10,582 train_aug ids")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    a = p.parse_args()
    from wsss.data.voc import prepare_voc

    r = prepare_voc(a.root, sbd_root=a.sbd_root, label_file=a.label_file, strict_standard=not a.allow_nonstandard)
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"train_aug from {r['train_aug_source']}")
    for split, n in r["counts"].items():
        print(f"  {split:10s} {n:6d} ids")
    print(f"labels: {r['labelled_ids']} ids -> {r['label_file']}")
    for kind, ids in r["missing"].items():
        if ids:
            print(f"  missing {kind}: {len(ids)} (first: {', '.join(ids[:5])})")
    if r["ids_without_objects"]:
        print(f"  ids whose annotation names no object: {len(r['ids_without_objects'])}")
    bad = r["missing"]["images"] or r["missing"]["annotations"]
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
