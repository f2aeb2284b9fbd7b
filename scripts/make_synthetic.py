#!/usr/bin/env python
"""Write the synthetic mini-VOC (exact VOC 2012 layout) and print its summary.

    python scripts/make_synthetic.py --root data/synthetic_voc/VOC2012 [--num-train 100 --num-aug 700 ...]
    python scripts/make_synthetic.py --config configs/demo/demo_synthetic.yaml   # the sizes a config names
    python scripts/make_synthetic.py --root data/voc_sized/VOC2012 --voc-sizes   # VOC-shaped images (long side 500)
"""
import argparse
import json
import sys
from pathlib import Path

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="take root and sizes from this config's data section")
    p.add_argument("--root", help="output folder (the VOC2012-style root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-train", type=int, default=100, help="images with SegmentationClass GT (VOC's 'train')")
    p.add_argument("--num-aug", type=int, default=700, help="extra training images (only in train_aug)")
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--num-test", type=int, default=20)
    p.add_argument("--num-classes", type=int, default=5)
    p.add_argument("--width-range", type=int, nargs=2, metavar=("LO", "HI"), help="non-square images: width drawn in [LO, HI]")
    p.add_argument("--height-range", type=int, nargs=2, metavar=("LO", "HI"), help="non-square images: height drawn in [LO, HI]")
    p.add_argument("--voc-sizes", action="store_true", help="roughly VOC 2012's image sizes: long side 500, mostly 500x375")
    p.add_argument("--scene", choices=["round", "elongated"], default=None,
                   help="round bodies with the part anywhere inside (default), or elongated ones with the part at one end")
    p.add_argument("--part-colours", choices=["pairs", "one_hue"], default=None,
                   help="parts in two palette colours (default) or one hue in two shades")
    p.add_argument("--decoys", type=int, default=None,
                   help="up to this many objects of no class per image (background; needs --part-colours one_hue)")
    p.add_argument("--shared-body", type=float, default=None,
                   help="the probability that a class body is of the shared family, not its class's (default 1: no class signal)")
    p.add_argument("--supersample", type=int, default=None, help="draw at this many times the size and box-filter down (default 1)")
    p.add_argument("--coco", action="store_true", help="also write a COCO-style copy under <root>/coco")
    p.add_argument("--force", action="store_true", help="write into an existing folder")
    a = p.parse_args()
    from wsss.data.synthetic import generate_synthetic_voc

    if a.config:
        from wsss.config import load_config

        cfg = load_config(a.config)
        s = cfg.data.synthetic
        root = a.root or cfg.data.root
        kw = dict(seed=s.seed, image_size=s.image_size, num_train=s.num_train, num_aug=s.num_aug, num_val=s.num_val,
                  num_test=s.num_test, num_classes=s.num_classes, write_coco=s.write_coco or a.coco,
                  width_range=a.width_range or s.width_range, height_range=a.height_range or s.height_range,
                  voc_sizes=a.voc_sizes or s.voc_sizes, scene=a.scene or s.scene,
                  part_colours=a.part_colours or s.part_colours,
                  decoys=s.decoys if a.decoys is None else a.decoys,
                  shared_body=s.shared_body if a.shared_body is None else a.shared_body,
                  supersample=s.supersample if a.supersample is None else a.supersample)
    else:
        if not a.root:
            p.error("give --root or --config")
        root = a.root
        kw = dict(seed=a.seed, image_size=a.image_size, num_train=a.num_train, num_aug=a.num_aug, num_val=a.num_val,
                  num_test=a.num_test, num_classes=a.num_classes, write_coco=a.coco,
                  width_range=a.width_range, height_range=a.height_range, voc_sizes=a.voc_sizes,
                  scene=a.scene or "round", part_colours=a.part_colours or "pairs", decoys=a.decoys or 0,
                  shared_body=1.0 if a.shared_body is None else a.shared_body, supersample=a.supersample or 1)
    if (Path(root) / "cls_labels.json").is_file() and not a.force:
        print(f"{root} already holds a dataset (use --force to overwrite)", file=sys.stderr)
        raise SystemExit(1)
    print(json.dumps(generate_synthetic_voc(root, **kw), indent=2))


if __name__ == "__main__":
    run_script(main)
