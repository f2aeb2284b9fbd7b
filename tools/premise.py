"""The premise of the synthetic bench: does the baseline CAM show the WSSS gap?

PPL and GSLM exist because a classifier's CAM covers the most discriminative part of an
object and little of the rest. A synthetic set on which the plain CAM already covers the
whole object (or floods the background) cannot show whether they help. So the bench checks,
on the baseline's evaluation, that the gap is there and that the CRF pseudo masks are good
enough for seed reactivation to have something right to reactivate:

* parts covered:   >= 90% of part pixels predicted as their class (best threshold)
* bodies not:      <= 60% of body pixels outside the part predicted as their class
* no flooding:     every class's CAM precision above its recall
* pseudo masks:    foreground precision >= 80% (confident pixels, mean over classes)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PremiseLimits:
    min_part: float = 0.90
    max_body: float = 0.60
    min_pseudo_precision: float = 0.80


def check_premise(cam_eval: dict, pseudo_eval: dict | None = None, limits: PremiseLimits = PremiseLimits()) -> dict:
    """``cam_eval``: eval_cam's result (with ``coverage``, i.e. on data with part masks);
    ``pseudo_eval``: eval_pseudo's. Returns every criterion with its value and verdict."""
    cov = cam_eval.get("coverage")
    if not cov:
        raise ValueError("the CAM evaluation has no part/body coverage (data without PartMasks/)")
    best = cam_eval["best"]
    classes = [c for c in best["iou"] if c != "background"]
    checks = {
        "parts_covered": {"value": cov["best"]["part"], "limit": f">= {limits.min_part}",
                          "ok": cov["best"]["part"] >= limits.min_part},
        "bodies_not_covered": {"value": cov["best"]["body"], "limit": f"<= {limits.max_body}",
                               "ok": cov["best"]["body"] <= limits.max_body},
    }
    flooding = {c: {"precision": best["precision"][c], "recall": best["recall"][c]} for c in classes
                if (best["precision"][c] or 0.0) <= (best["recall"][c] or 0.0)}
    checks["no_flooding"] = {"value": sorted(flooding), "limit": "precision > recall for every class",
                             "ok": not flooding, "classes": flooding}
    if pseudo_eval is not None:
        prec = pseudo_eval["confident_only"]["precision"]
        vals = [prec[c] for c in classes if prec.get(c) is not None]
        mean = sum(vals) / len(vals) if vals else 0.0
        checks["pseudo_precision"] = {"value": mean, "limit": f">= {limits.min_pseudo_precision}",
                                      "ok": mean >= limits.min_pseudo_precision,
                                      "per_class": {c: prec.get(c) for c in classes}}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
