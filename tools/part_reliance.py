"""Does the classifier name each class from its part? (synthetic data with PartMasks/)

The synthetic bench assumes that the part alone names the class. A classifier can also learn
a shortcut: every object is of one of K classes, so an object whose part it does not
recognise as one of K-1 classes "must be" the remaining one. Such a class is recognised from
the body and its surroundings, and its CAM covers them (it floods). This diagnostic measures
it directly: for every image and every class present, the class's score (sigmoid of the
logit) on the image as it is and on the image with that class's visible part pixels painted
over with the mean colour of its body outside the part, against the class's score on the
images without it.
"""
from __future__ import annotations

import numpy as np
import torch

from wsss.data.voc import VOCLayout
from wsss.fileio import read_image, read_mask

# a class is "recognised without its part" when its mean score with its parts erased is at least
# this. Measured on 7 baseline runs of the elongated scenes (docs/synthetic_bench.md): 0.28-0.60
# for 10 of the 11 classes whose CAM flooded (the other: 0.10), at most 0.21 for those that did
# not but one (0.48; it flooded at a threshold 0.04 below the best)
WITHOUT_PART_SCORE = 0.25


def erase_part(img: np.ndarray, label: np.ndarray, parts: np.ndarray, cls: int) -> np.ndarray:
    """``img`` with class ``cls``'s (1-based) visible part pixels set to the mean colour of its
    body outside the part (grey 128 when no body pixel is left)."""
    out = img.copy()
    body = (label == cls) & (parts != cls)
    out[parts == cls] = img[body].mean(0).round().astype(np.uint8) if body.any() else 128
    return out


@torch.no_grad()
def measure_part_reliance(model: torch.nn.Module, root: str, split: str, num_classes: int, mean, std,
                  device: torch.device, class_names: list[str]) -> dict:
    """Per class: mean score with the part, with it erased, on images without the class, and
    whether the class is recognised without its part."""
    layout = VOCLayout(root)
    ids = layout.read_split(split)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def scores(images: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        return torch.sigmoid(model((x - mean_t) / std_t)["logits"].float()).cpu().numpy()

    seen = {c: {"with_part": [], "part_erased": [], "absent": []} for c in range(num_classes)}
    for image_id in ids:
        img = read_image(layout.image(image_id))
        label = read_mask(layout.mask(image_id, "SegmentationClassAug"), num_classes)
        parts = read_mask(layout.part_dir / f"{image_id}.png", num_classes)
        present = [c for c in range(num_classes) if (parts == c + 1).any()]
        batch = [img] + [erase_part(img, label, parts, c + 1) for c in present]
        s = scores(batch)
        for c in range(num_classes):
            if c not in present:
                seen[c]["absent"].append(float(s[0, c]))
        for row, c in enumerate(present, start=1):
            seen[c]["with_part"].append(float(s[0, c]))
            seen[c]["part_erased"].append(float(s[row, c]))
    per_class = {}
    for c, v in seen.items():
        m = {k: (float(np.mean(x)) if x else None) for k, x in v.items()}
        m["images"] = len(v["with_part"])
        m["without_part"] = bool(m["images"] and m["part_erased"] >= WITHOUT_PART_SCORE)
        per_class[class_names[c]] = m
    return {"split": split, "num_images": len(ids), "limit": WITHOUT_PART_SCORE, "per_class": per_class,
            "recognised_without_part": sorted(c for c, m in per_class.items() if m["without_part"])}


def part_reliance(cfg) -> dict:
    """scripts/part_reliance.py: the trained CAM network of cam.checkpoint on eval_cam.split;
    writes metrics/part_reliance.{json,md}."""
    from wsss.cam.training import load_cam_model
    from wsss.data.labels import ImageLabels
    from wsss.data.synthetic import ensure_data
    from wsss.engine.distributed import is_main
    from wsss.engine.trainer import setup_runtime
    from wsss.fileio import DataError
    from wsss.lock import claim
    from wsss.reports import md_table, pct, save_metrics

    claim(cfg.work_dir)
    device = setup_runtime(cfg)
    ensure_data(cfg)
    part_dir = VOCLayout(cfg.data.root).part_dir
    if not part_dir.is_dir():
        raise DataError(f"{part_dir}: no part masks (part_reliance needs the synthetic data)")
    model = load_cam_model(cfg, cfg.cam.checkpoint, device)
    names = ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    out = measure_part_reliance(model, cfg.data.root, cfg.eval_cam.split, cfg.data.num_classes, cfg.train.aug.mean,
                                cfg.train.aug.std, device, names)
    rows = [[c, pct(m["with_part"]), pct(m["part_erased"]), pct(m["absent"]), m["images"], "yes" if m["without_part"] else "no"]
            for c, m in out["per_class"].items()]
    table = md_table(["class", "score with part (%)", "part erased (%)", "class absent (%)", "images", "recognised without its part"], rows)
    md = f"# Part reliance ({out['split']}, {out['num_images']} images)\n\n{table}"
    without = ", ".join(out["recognised_without_part"]) or "none"
    line = f"classes recognised without their part (mean score with the part erased >= {pct(out['limit'])}%): {without}"
    if is_main():
        j, _ = save_metrics(cfg, "part_reliance", out, md + "\n" + line + "\n")
        print(table)
        print(line)
        print(f"saved {j}")
    return out
