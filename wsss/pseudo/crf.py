"""DenseCRF (pydensecrf) for label maps and probability maps.

The pairwise terms (the Gaussian and the bilateral kernel, whose permutohedral
lattice is the expensive part) depend only on the image; the unary depends on
the label map. ``crf_labels`` therefore builds the CRF once per image and runs
it for several label maps (make_pseudo's fg and bg thresholds); mean-field
inference restarts from each new unary, so the results equal independent CRFs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CRFParams:
    iters: int = 10
    gt_prob: float = 0.7
    gauss_sxy: float = 3.0
    gauss_compat: float = 10.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    # > 0: the two sxy (pixel units) were set for images of this long side and scale with
    # each image's long side (sxy * max(H, W) / reference_size); 0: used as given
    reference_size: float = 0.0

    @classmethod
    def from_pseudo(cls, p) -> "CRFParams":
        return cls(p.crf_iters, p.gt_prob, p.gauss_sxy, p.gauss_compat, p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat,
                   p.crf_reference_size)

    def sxy_for(self, h: int, w: int) -> tuple[float, float]:
        """(Gaussian sxy, bilateral sxy) for an image of h x w pixels."""
        f = max(h, w) / self.reference_size if self.reference_size > 0 else 1.0
        return self.gauss_sxy * f, self.bilateral_sxy * f


def _dense_crf(img: np.ndarray, n_labels: int, p: CRFParams):
    import pydensecrf.densecrf as dcrf

    h, w = img.shape[:2]
    g_sxy, b_sxy = p.sxy_for(h, w)
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.addPairwiseGaussian(sxy=g_sxy, compat=p.gauss_compat)
    d.addPairwiseBilateral(sxy=b_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(img), compat=p.bilateral_compat)
    return d


def crf_labels(img: np.ndarray, label_maps: list[np.ndarray], n_labels: int, p: CRFParams, shared: bool = True) -> list[np.ndarray]:
    """Refine each label map (values 0..n_labels-1) with the label CRF; returns the argmax maps."""
    from pydensecrf.utils import unary_from_labels

    h, w = img.shape[:2]
    out = []
    d = _dense_crf(img, n_labels, p) if shared else None
    for labels in label_maps:
        crf = d if shared else _dense_crf(img, n_labels, p)
        crf.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=p.gt_prob, zero_unsure=False))
        q = np.asarray(crf.inference(p.iters), dtype=np.float32).reshape(n_labels, h, w)
        out.append(np.argmax(q, 0))
    return out


def crf_probabilities(img: np.ndarray, probs: np.ndarray, iters: int, gauss_sxy: float, gauss_compat: float,
                      bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float) -> np.ndarray:
    """Probability CRF (deeplab-pytorch's post-processing): unary = -log(probs); returns refined probs."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(unary_from_softmax(np.ascontiguousarray(probs, dtype=np.float32)))
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(img), compat=bilateral_compat)
    return np.asarray(d.inference(iters), dtype=np.float32).reshape(c, h, w)
