"""Confusion matrices, mIoU, and the one-pass CAM threshold sweep.

mIoU is the mean over classes (background included) of TP / (TP + FP + FN),
from one confusion matrix accumulated over the whole split; GT 255 is ignored.
A class absent from both GT and prediction has no IoU (NaN) and is left out of
the mean.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n: int, ignore_pred_255: bool = False) -> np.ndarray:
    """[n, n] counts, rows = GT class, columns = predicted class; GT 255 ignored.

    Predicted 255 counts as background unless ``ignore_pred_255`` (then those
    pixels are left out).
    """
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    valid = gt != 255
    if ignore_pred_255:
        valid &= pred != 255
    else:
        pred = np.where(pred == 255, 0, pred)
    gt, pred = gt[valid], pred[valid]
    if gt.size and (gt.max() >= n or pred.max() >= n):
        raise ValueError(f"label values exceed {n - 1}")
    return np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)


def scores(conf: np.ndarray, class_names: list[str] | None = None) -> dict:
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_sum = conf.sum(1)
    pred_sum = conf.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_sum + pred_sum - tp)
        precision = tp / pred_sum
        recall = tp / gt_sum
    names = class_names or [str(i) for i in range(len(tp))]
    total = conf.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "iou": {n: _f(v) for n, v in zip(names, iou)},
        "precision": {n: _f(v) for n, v in zip(names, precision)},
        "recall": {n: _f(v) for n, v in zip(names, recall)},
    }


def _f(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def cam_to_label(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Label map from normalised CAMs: a background plane at ``threshold``, argmax.

    A pixel is background unless some kept class exceeds the threshold (ties
    go to background, as np.argmax picks the first maximum).
    """
    h, w = cams.shape[1:]
    if len(keys) == 0:
        return np.zeros((h, w), np.int64)
    planes = np.concatenate([np.full((1, h, w), threshold, dtype=np.float32), cams.astype(np.float32)], 0)
    lut = np.concatenate([[0], np.asarray(keys) + 1])
    return lut[np.argmax(planes, 0)]


def threshold_range(start: float, stop: float, step: float) -> list[float]:
    n = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(n)]


class ThresholdSweep:
    """Confusion matrices for T background thresholds from one pass over the pixels.

    Per pixel, the predicted foreground class (argmax over the kept CAMs) does
    not depend on the threshold; only the foreground/background decision does
    (max score > t). So one histogram over (GT class, argmax class, index of the
    score among the sorted thresholds) gives every threshold's confusion by a
    cumulative sum. Equal, bit for bit, to T calls of :func:`cam_to_label`.
    """

    def __init__(self, num_classes: int, thresholds: list[float], gt_rows: int | None = None):
        """``gt_rows``: how many GT values (rows) there are, when the GT map is not a class
        map (the synthetic data's part/body regions); default ``num_classes + 1``."""
        self.n = num_classes + 1
        self.rows = gt_rows or self.n
        self.thresholds = np.asarray(sorted(thresholds), dtype=np.float32)
        if len(np.unique(self.thresholds)) != len(self.thresholds):
            raise ValueError("thresholds must be distinct")
        self.t = len(self.thresholds)
        self.hist = np.zeros(self.rows * self.n * (self.t + 1), dtype=np.int64)

    def add(self, gt: np.ndarray, cams: np.ndarray, keys: np.ndarray) -> None:
        gt = np.asarray(gt).ravel().astype(np.int64)
        valid = gt != 255
        if len(keys) == 0:
            fg = np.zeros(gt.shape, np.int64)
            idx = np.zeros(gt.shape, np.int64)
        else:
            flat = cams.reshape(len(keys), -1).astype(np.float32, copy=False)
            arg = np.argmax(flat, 0)
            top = np.take_along_axis(flat, arg[None], 0)[0]
            fg = (np.asarray(keys) + 1)[arg]
            # number of thresholds strictly below the score: fg for thresholds t_j, j < idx
            idx = np.searchsorted(self.thresholds, top, side="left")
        code = (gt[valid] * self.n + fg[valid]) * (self.t + 1) + idx[valid]
        self.hist += np.bincount(code, minlength=self.hist.size)

    def confusions(self) -> np.ndarray:
        """[T, rows, n] confusion matrices, one per threshold (in sorted order)."""
        h = self.hist.reshape(self.rows, self.n, self.t + 1)
        # fg_at[j] = pixels with idx > j, i.e. predicted as their argmax class at threshold j
        tail = np.cumsum(h[:, :, ::-1], axis=2)[:, :, ::-1]  # tail[..., i] = sum_{idx >= i}
        out = np.zeros((self.t, self.rows, self.n), np.int64)
        for j in range(self.t):
            fg = tail[:, :, j + 1]
            bg_rows = h.sum(2) - fg  # pixels that fall back to background
            conf = fg.copy()
            # rows keep their GT class; whatever is not foreground at threshold j is predicted 0
            conf[:, 0] = fg[:, 0] + bg_rows.sum(1)
            out[j] = conf
        return out

    def results(self, class_names: list[str] | None = None) -> list[dict]:
        return [{"threshold": float(round(float(t), 6)), **scores(c, class_names)} for t, c in zip(self.thresholds, self.confusions())]


def region_map(gt: np.ndarray, parts: np.ndarray, num_classes: int, decoys: np.ndarray | None = None) -> np.ndarray:
    """GT regions of the synthetic data: 0 background, c+1 the body of class c outside its
    part, num_classes + 1 + c the part of class c, 255 ignored (a :class:`ThresholdSweep`
    with ``gt_rows=2 * num_classes + 1`` counts predictions per region). With ``decoys`` (the
    data's DecoyMasks: 1 a decoy's visible body, 2 its part), the background splits further:
    2 * num_classes + 1 a decoy body, 2 * num_classes + 2 a decoy part (``gt_rows=2 * num_classes + 3``)."""
    out = np.asarray(gt).astype(np.int64).copy()
    p = np.asarray(parts).astype(np.int64)
    inside = (p > 0) & (p != 255) & (out != 255)
    out[inside] = num_classes + p[inside]
    if decoys is not None:
        d = np.asarray(decoys).astype(np.int64)
        for v in (1, 2):
            out[(d == v) & (np.asarray(gt) == 0)] = 2 * num_classes + v
    return out


def region_rows(num_classes: int, decoys: bool) -> int:
    """The GT rows of :func:`region_map`'s regions."""
    return 2 * num_classes + (3 if decoys else 1)


def coverage(conf: np.ndarray, class_names: list[str]) -> dict:
    """From a [2K+1, K+1] region confusion: per class, the part's and the body's (outside the
    part) share predicted as that class, and the share of all background pixels predicted
    as that class; overall the same pooled over classes (background: any foreground). From a
    [2K+3, K+1] one (with decoys) also ``decoy_body_fp``: the share of decoy body pixels
    predicted as any class (per class: as that class); decoy pixels count as background."""
    k = len(class_names)
    conf = conf.astype(np.float64)
    decoys = conf.shape[0] > 2 * k + 1
    # every background pixel, decoys included: the same background FP as without the split
    bg = conf[0] + (conf[2 * k + 1] + conf[2 * k + 2] if decoys else 0)

    def share(num, den):
        return float(num / den) if den > 0 else None

    per_class = {}
    for c, name in enumerate(class_names):
        body, part = conf[c + 1], conf[k + 1 + c]
        per_class[name] = {"part": share(part[c + 1], part.sum()), "body": share(body[c + 1], body.sum()),
                           "background_fp": share(bg[c + 1], bg.sum())}
        if decoys:
            per_class[name]["decoy_body_fp"] = share(conf[2 * k + 1, c + 1], conf[2 * k + 1].sum())
    idx = np.arange(k)
    extra = {"decoy_body_fp": share(conf[2 * k + 1, 1:].sum(), conf[2 * k + 1].sum())} if decoys else {}
    return {
        "part": share(conf[k + 1 + idx, idx + 1].sum(), conf[k + 1:2 * k + 1].sum()),
        "body": share(conf[idx + 1, idx + 1].sum(), conf[1:k + 1].sum()),
        "background_fp": share(bg[1:].sum(), bg.sum()),
        **extra,
        "per_class": per_class,
    }
