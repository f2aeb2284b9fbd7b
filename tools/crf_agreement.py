"""Agreement of the PyTorch dense CRF (wsss.pseudo.crf_torch) with pydensecrf on VOC-sized images.

    python -m tools.crf_agreement [--images 24] [--seed 0] [--out results.json]
    python scripts/crf_agreement.py --out docs/results/crf_agreement.json   # what docs/crf_torch.md quotes

For each image, both backends run

* the label CRF as make_pseudo runs it: ``wsss.pseudo.make.refined_labels`` at the fg and bg
  thresholds (GSLM's CRF, ``CRFConfig()``), then ``combine_fg_bg``; the torch backend is the
  same code with ``make.crf_labels`` replaced by ``crf_labels_torch``;
* the probability CRF with DeepLab's parameters on 21-class probabilities.

Per image it records the share of pixels whose label agrees (the fg map, the bg map, the pseudo
mask; the argmax of the probability CRF), the largest probability difference and the share of
bitwise-equal probabilities; and the same for a second torch run with ``exact=False``
(torch.softmax instead of Eigen's order of operations), which shows what that order is worth. Over the images: min / median / mean. Both backends' pseudo masks
are scored against the GT with ``wsss.metrics`` (mIoU with 255 as background, and on confident
pixels only, as ``evaluate_masks``); the two mIoUs must agree to 0.05 points.

Data (no training): synthetic scenes from ``wsss.data.synthetic.render_scene`` at VOC's sizes
(500x375 and 375x500 alternately, or ``--sizes voc`` for the generator's VOC mix), 20 classes,
JPEG-compressed at quality 92 as the generator writes them. The CAM-like score maps are made
from the GT: per class present, a blur of the object mask (sigma 6 % of the short side, peak
0.35-0.8, so that the fg threshold cuts into the object) plus a sharper blur of its part (peak
0.6, the discriminative region a CAM peaks on), times a smooth random field
(0.6-1.2, CAM-like uneven activation), plus smooth noise (+-0.1) and pixel noise (0.03), clipped
to [0, 1] and max-normalised as make_cam does. The 21-class probabilities are a softmax of
8 x [0.3 (the background plane), the present classes' maps, 0 for absent classes] plus noise
(0.3) per class.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEEPLAB = {"gauss_sxy": 1.0, "gauss_compat": 3.0, "bilateral_sxy": 67.0, "bilateral_srgb": 3.0,
           "bilateral_compat": 4.0, "iters": 10}
FG_THRES, BG_THRES = 0.30, 0.05  # PseudoConfig's defaults
NUM_CLASSES = 20


# --------------------------------------------------------------------------
# VOC-sized samples with CAM-like maps (shared with tools/crf_throughput.py)
# --------------------------------------------------------------------------
def sample_sizes(n: int, seed: int, sizes: str = "voc2") -> list[tuple[int, int]]:
    """(h, w): 375x500 and 500x375 (h x w) alternately, or the generator's VOC mix."""
    if sizes == "voc2":
        return [(375, 500) if i % 2 == 0 else (500, 375) for i in range(n)]
    from wsss.data.synthetic import image_sizes

    return image_sizes(n, seed, 500, voc_sizes=True)


def _blur(x, sigma: float):
    """Separable Gaussian blur of a [H, W] float tensor (reflect padding)."""
    import torch
    import torch.nn.functional as F

    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, -1)
    y = x[None, None]
    y = F.conv1d(F.pad(y.reshape(-1, 1, y.shape[-1]), (r, r), mode="reflect"), k).view(1, 1, *x.shape)
    yt = y.transpose(2, 3).reshape(-1, 1, x.shape[0])
    y = F.conv1d(F.pad(yt, (r, r), mode="reflect"), k).view(1, 1, x.shape[1], x.shape[0]).transpose(2, 3)
    return y[0, 0]


def _smooth_field(rng: np.random.Generator, h: int, w: int, lo: float, hi: float):
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.uniform(lo, hi, (1, 1, 5, 7)).astype(np.float32))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0, 0]


def cam_like(label: np.ndarray, parts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cams [k, H, W] float32 in [0, 1], keys [k]) for the classes present in ``label``."""
    import torch

    h, w = label.shape
    keys = np.array(sorted(int(c) - 1 for c in np.unique(label) if c not in (0, 255)), np.int64)
    cams = []
    for c in keys:
        body = _blur(torch.from_numpy((label == c + 1).astype(np.float32)), 0.06 * min(h, w))
        part = _blur(torch.from_numpy((parts == c + 1).astype(np.float32)), 0.02 * min(h, w))
        s = rng.uniform(0.35, 0.8) * body / body.max().clamp(min=1e-6) + 0.6 * part / part.max().clamp(min=1e-6)
        s = s * _smooth_field(rng, h, w, 0.6, 1.2) + _smooth_field(rng, h, w, -0.1, 0.1)
        s = s + torch.from_numpy(rng.normal(0, 0.03, (h, w)).astype(np.float32))
        s = s.clamp(0, 1)
        cams.append((s / s.max().clamp(min=1e-6)).numpy())
    return (np.stack(cams) if cams else np.zeros((0, h, w), np.float32)), keys


def class_probabilities(cams: np.ndarray, keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """21-class probabilities [21, H, W] (float32) from the CAM-like maps."""
    h, w = cams.shape[1:]
    planes = np.zeros((NUM_CLASSES + 1, h, w), np.float32)
    planes[0] = FG_THRES
    planes[keys + 1] = cams
    logits = 8.0 * planes + rng.normal(0, 0.3, (NUM_CLASSES + 1, 1, 1)).astype(np.float32)
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def make_samples(n: int, seed: int, sizes: str = "voc2", jpeg_quality: int = 92) -> list[dict]:
    """n samples: image (uint8 HxWx3, JPEG round trip), gt (0..20, 255 on the 1-px boundary band),
    cams, keys, probs."""
    from PIL import Image

    from wsss.data.synthetic import boundary_band, class_styles, render_scene

    rng = np.random.default_rng(seed)
    styles = class_styles(NUM_CLASSES)
    out = []
    for h, w in sample_sizes(n, seed, sizes):
        img, label, parts, _ = render_scene(rng, min(h, w), styles, hw=(h, w))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=jpeg_quality)
        img = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        gt = label.copy()
        gt[boundary_band(label)] = 255
        cams, keys = cam_like(label, parts, rng)
        out.append({"image": np.ascontiguousarray(img), "gt": gt, "cams": cams, "keys": keys,
                    "probs": class_probabilities(cams, keys, rng)})
    return out


def pydensecrf_version() -> str:
    try:
        from importlib.metadata import version

        return version("pydensecrf2")
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def check_out(path: str | None, script: str) -> None:
    """docs/results/ takes only what scripts/ made (tests/test_results_docs.py checks each
    file's command), so a run of the tool module may not write there: say so before measuring."""
    from tools.published import RESULTS_DIR

    if path and Path(path).resolve().parent == RESULTS_DIR.resolve() \
            and Path(sys.argv[0]).resolve() != (REPO / "scripts" / script).resolve():
        raise SystemExit(f"error: docs/results/ holds what scripts/{script} made; run that to write there")


def publish_to(path: str, kind: str, data: dict) -> Path:
    """Write ``data`` as the project publishes results (tools.published.publish: the command, the
    machine, the commit, the data)."""
    from tools.published import publish

    return publish(path, kind, data)


def stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max()), "n": int(v.size)}


# --------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------
def measure(samples: list[dict], device: str = "cpu", inexact: bool = True) -> dict:
    import torch

    from wsss.config import CRFConfig
    from wsss.metrics import confusion_matrix, scores
    from wsss.pseudo import make
    from wsss.pseudo.crf import crf_probabilities
    from wsss.pseudo.crf_torch import crf_labels_torch, crf_probabilities_torch

    label_p, prob_p = CRFConfig(), CRFConfig(**DEEPLAB)
    n = NUM_CLASSES + 1

    exact = [True]

    def torch_crf_labels(img, maps, n_labels, p, shared=True):
        return crf_labels_torch(img, maps, n_labels, p, device=device, exact=exact[0])

    conf = {b: {"as_background": np.zeros((n, n), np.int64), "confident": np.zeros((n, n), np.int64)}
            for b in ("pydensecrf", "torch", "no_crf")}
    rows, seconds = [], {"pydensecrf": 0.0, "torch": 0.0}
    for i, s in enumerate(samples):
        img, cams, keys, gt = s["image"], s["cams"], s["keys"], s["gt"]
        t0 = time.perf_counter()
        fg_p, bg_p = make.refined_labels(img, cams, keys, [FG_THRES, BG_THRES], label_p)
        prob_ref = crf_probabilities(img, s["probs"], prob_p)
        t1 = time.perf_counter()
        with mock.patch.object(make, "crf_labels", torch_crf_labels):
            fg_t, bg_t = make.refined_labels(img, cams, keys, [FG_THRES, BG_THRES], label_p)
        prob_t = crf_probabilities_torch(img, s["probs"], prob_p, device=device)
        if device != "cpu":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        seconds["pydensecrf"] += t1 - t0
        seconds["torch"] += t2 - t1
        masks = {"pydensecrf": make.combine_fg_bg(fg_p, bg_p), "torch": make.combine_fg_bg(fg_t, bg_t),
                 "no_crf": make.combine_fg_bg(*make.refined_labels(img, cams, keys, [FG_THRES, BG_THRES], None))}
        for b, m in masks.items():
            conf[b]["as_background"] += confusion_matrix(gt, m, n)
            conf[b]["confident"] += confusion_matrix(gt, m, n, ignore_pred_255=True)
        diff = np.abs(prob_t - prob_ref)
        extra = {}
        if inexact:  # the same with torch.softmax in place of Eigen's softmax
            exact[0] = False
            with mock.patch.object(make, "crf_labels", torch_crf_labels):
                fg_i, bg_i = make.refined_labels(img, cams, keys, [FG_THRES, BG_THRES], label_p)
            exact[0] = True
            prob_i = crf_probabilities_torch(img, s["probs"], prob_p, device=device, exact=False)
            extra = {"inexact_label_crf_differing_pixels": int((fg_i != fg_p).sum() + (bg_i != bg_p).sum()),
                     "inexact_prob_crf_argmax_agreement": float((prob_i.argmax(0) == prob_ref.argmax(0)).mean()),
                     "inexact_prob_crf_max_abs_diff": float(np.abs(prob_i - prob_ref).max()),
                     "inexact_prob_crf_bitwise_equal_share": float((prob_i == prob_ref).mean())}
        rows.append({
            "image": i, "size": f"{img.shape[1]}x{img.shape[0]}", "labels": int(len(keys) + 1),
            "label_crf_fg_agreement": float((fg_p == fg_t).mean()),
            "label_crf_bg_agreement": float((bg_p == bg_t).mean()),
            "pseudo_mask_agreement": float((masks["pydensecrf"] == masks["torch"]).mean()),
            "label_maps_bitwise_equal": bool(np.array_equal(fg_p, fg_t) and np.array_equal(bg_p, bg_t)),
            "prob_crf_argmax_agreement": float((prob_t.argmax(0) == prob_ref.argmax(0)).mean()),
            "prob_crf_max_abs_diff": float(diff.max()),
            "prob_crf_bitwise_equal_share": float((prob_t == prob_ref).mean()),
            **extra,
        })
        print(f"[{i + 1}/{len(samples)}] {rows[-1]['size']} {rows[-1]['labels']} labels: "
              f"fg {rows[-1]['label_crf_fg_agreement']:.6f} bg {rows[-1]['label_crf_bg_agreement']:.6f} "
              f"prob argmax {rows[-1]['prob_crf_argmax_agreement']:.6f} max|dQ| {rows[-1]['prob_crf_max_abs_diff']:.2e}",
              flush=True)
    names = ["background"] + [f"class{c:02d}" for c in range(NUM_CLASSES)]
    miou = {b: {k: 100 * scores(c, names)["miou"] for k, c in v.items()} for b, v in conf.items()}
    keys_ = [k for k in rows[0] if k not in ("image", "size", "labels", "label_maps_bitwise_equal")]
    summary = {k: stats([r[k] for r in rows]) for k in keys_}
    summary["images_with_bitwise_equal_label_maps"] = sum(r["label_maps_bitwise_equal"] for r in rows)
    gap = {k: abs(miou["pydensecrf"][k] - miou["torch"][k]) for k in miou["torch"]}
    worst = min(min(r["label_crf_fg_agreement"], r["label_crf_bg_agreement"], r["prob_crf_argmax_agreement"]) for r in rows)
    return {
        "summary": summary,
        "pseudo_mask_miou": {**miou, "abs_difference_torch_vs_pydensecrf": gap},
        "targets": {"per_image_pixel_agreement": ">= 0.999", "miou_difference": "<= 0.05 points"},
        "met": {"per_image_pixel_agreement": worst >= 0.999, "miou_difference": max(gap.values()) <= 0.05},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "per_image": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="number of images (default 24)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", choices=["voc2", "voc"], default="voc2",
                    help="voc2: 375x500 and 500x375 alternately (default); voc: the generator's VOC mix")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--device", default="cpu", help="the torch backend's device (cpu, cuda)")
    ap.add_argument("--no-inexact", action="store_true",
                    help="skip the second torch run with exact=False (torch.softmax instead of Eigen's order)")
    ap.add_argument("--out", help="write the results here as JSON (docs/results/: through scripts/crf_agreement.py)")
    a = ap.parse_args(argv)
    check_out(a.out, "crf_agreement.py")
    import torch

    torch.set_num_threads(a.threads)
    samples = make_samples(a.images, a.seed, a.sizes)
    res = measure(samples, a.device, inexact=not a.no_inexact)
    data = {"settings": {"images": a.images, "seed": a.seed, "sizes": a.sizes, "threads": a.threads, "device": a.device,
                         "label_crf": "CRFConfig() (GSLM's: gauss 3/10, bilateral 50/5/10, gt_prob 0.7, 10 iters)",
                         "prob_crf": DEEPLAB, "fg_thres": FG_THRES, "bg_thres": BG_THRES,
                         "pydensecrf2": pydensecrf_version()}, **res}
    from tools.published import render_crf_agreement

    print(render_crf_agreement({"kind": "crf_agreement", "command": "(this run)", "data": data}))
    print("met:", res["met"])
    if a.out:
        print(f"wrote {publish_to(a.out, 'crf_agreement', data)}")
    return 0 if all(res["met"].values()) else 1



if __name__ == "__main__":
    sys.exit(main())
