"""What the label CRF does to a CAM on the synthetic data: CAM+CRF against the CAM alone.

The graded bench needs a CRF that acts on its 128 px images as the reference's CRF acts on
VOC-sized ones (docs/synthetic_bench.md, "The CRF rule"): in the reference's loop the CRF is
the only spatial knowledge the SLM rounds get beyond their own CAM. This measures, at one
background threshold (the sweep's best by default), the CAM's and the CAM+CRF's mIoU and
their coverage of parts, bodies, background and decoy bodies, so that the CRF's gain can be
compared between image sizes and kernels, and a CRF that fills whole bodies on its own (body
coverage after the CRF near 100%) is seen.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from wsss.config import Config, CRFConfig
from wsss.data.cam_files import cam_path, load_cam
from wsss.data.voc import VOCLayout
from wsss.fileio import read_image, read_mask
from wsss.metrics import confusion_matrix, coverage, region_map, region_rows, scores
from wsss.parallel import chunks, imap_unordered
from wsss.pseudo.refine import refined_labels


def _chunk(ids, root: str, gt_dir: str, cam_dir: str, k: int, threshold: float, crf: CRFConfig):
    layout = VOCLayout(root)
    decoys = layout.decoy_dir.is_dir()
    n, rows = k + 1, region_rows(k, decoys)
    out = {name: (np.zeros((n, n), np.int64), np.zeros((rows, n), np.int64)) for name in ("cam", "crf")}
    for image_id in ids:
        gt = read_mask(layout.mask(image_id, gt_dir), k)
        cam = load_cam(cam_path(cam_dir, image_id), gt.shape, k)
        img = read_image(layout.image(image_id))
        regions = region_map(gt, read_mask(layout.part_dir / f"{image_id}.png", k), k,
                             read_mask(layout.decoy_dir / f"{image_id}.png", 2) if decoys else None)
        plain, refined = (refined_labels(img, cam["high_res"], cam["keys"], [threshold], c)[0] for c in (None, crf))
        for name, pred in (("cam", plain), ("crf", refined)):
            conf, reg = out[name]
            conf += confusion_matrix(gt, pred, n)
            valid = regions != 255
            reg += np.bincount(regions[valid] * n + pred[valid], minlength=rows * n).reshape(rows, n)
    return out


def crf_effect(cfg: Config, cam_dir: str | Path, threshold: float, split: str | None = None, crf: CRFConfig | None = None,
               workers: int = 0) -> dict:
    """CAM and CAM+CRF (``crf``, default ``pseudo.crf_params``) at ``threshold`` on ``split``
    (default ``eval_cam.split``): mIoU, and part / body / background / decoy-body coverage."""
    split = split or cfg.eval_cam.split
    crf = crf or cfg.pseudo.crf_params
    k = cfg.data.num_classes
    ids = VOCLayout(cfg.data.root).read_split(split)
    fn = partial(_chunk, root=cfg.data.root, gt_dir=cfg.data.gt_dir, cam_dir=str(cam_dir), k=k, threshold=threshold, crf=crf)
    total = None
    for part in imap_unordered(fn, chunks(ids, workers) if workers > 1 else [ids], workers, chunksize=1):
        total = part if total is None else {n: (total[n][0] + part[n][0], total[n][1] + part[n][1]) for n in total}
    from wsss.data.labels import ImageLabels

    names = ImageLabels.load(cfg.data.label_file, k).classes
    out = {"split": split, "threshold": threshold, "images": len(ids),
           "crf": {"srgb": crf.bilateral_srgb, "bilateral_sxy": crf.sxy_for(*read_image(VOCLayout(cfg.data.root).image(ids[0])).shape[:2])[1],
                   "reference_size": crf.reference_size}}
    for name, (conf, reg) in total.items():
        cov = coverage(reg, names)
        out[name] = {"miou": scores(conf, ["background", *names])["miou"],
                     **{key: cov.get(key) for key in ("part", "body", "background_fp", "decoy_body_fp")}}
    out["delta_miou"] = out["crf"]["miou"] - out["cam"]["miou"]
    return out


def neighbour_affinity(img: np.ndarray, mask: np.ndarray, srgb: float) -> float:
    """The mean colour term of the bilateral kernel, exp(-|I_i - I_j|^2 / (2 srgb^2)), between
    4-neighbours that both lie in ``mask``: how strongly the CRF ties a region's pixels."""
    x = img.astype(np.float64)
    vals = []
    for a, b, ma, mb in ((x[1:], x[:-1], mask[1:], mask[:-1]), (x[:, 1:], x[:, :-1], mask[:, 1:], mask[:, :-1])):
        both = ma & mb
        d2 = ((a - b) ** 2).sum(-1)[both]
        vals.append(np.exp(-d2 / (2 * srgb ** 2)))
    v = np.concatenate(vals)
    return float(v.mean()) if v.size else float("nan")
