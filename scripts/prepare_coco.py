#!/usr/bin/env python
"""Convert MS COCO 2014 (official instances JSON + images) to the VOC layout.

    python scripts/prepare_coco.py --coco-root data/coco2014 --out data/coco2014/voc_layout --workers 8

Writes palette-PNG masks (80 classes -> 1..80, crowd -> 255; smaller objects on top),
ImageSets/Segmentation/{train,val}.txt and cls_labels.json. Needs pycocotools
(pip install 'wsss-ppl-gslm[coco]').
"""
import argparse
import json

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco-root", required=True, help="holds train2014/, val2014/ and annotations/")
    p.add_argument("--out", required=True, help="output VOC-layout root (data.root of the COCO configs)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--link", choices=["symlink", "hardlink", "copy"], default="symlink", help="how JPEGImages/ refers to the images")
    p.add_argument("--redo", action="store_true", help="rewrite existing masks")
    a = p.parse_args()
    from wsss.data.coco import prepare_coco

    r = prepare_coco(a.coco_root, a.out, workers=a.workers, link=a.link, redo=a.redo)
    print(json.dumps(r, indent=2))
    if any(s["missing_images"] for s in r["splits"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
