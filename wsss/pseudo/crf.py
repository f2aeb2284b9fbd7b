"""DenseCRF for label maps and probability maps: pydensecrf, or the same computation in PyTorch
(wsss.pseudo.crf_torch) on CUDA or the CPU, as ``CRFConfig.backend`` says.

The pairwise terms (the Gaussian and the bilateral kernel, whose permutohedral
lattice is the expensive part) depend only on the image; the unary depends on
the label map. ``crf_labels`` therefore builds the CRF once per image and runs
it for several label maps (make_pseudo's fg and bg thresholds); mean-field
inference restarts from each new unary, so the results equal independent CRFs.
"""
from __future__ import annotations

import numpy as np

from wsss.config import CRFConfig


def backend(p: CRFConfig, device=None) -> str:
    """The backend that runs: auto = torch on a CUDA device, pydensecrf otherwise."""
    if p.backend != "auto":
        return p.backend
    return "torch" if device is not None and getattr(device, "type", str(device)).startswith("cuda") else "pydensecrf"


def _dense_crf(img: np.ndarray, n_labels: int, p: CRFConfig):
    import pydensecrf.densecrf as dcrf

    h, w = img.shape[:2]
    g_sxy, b_sxy = p.sxy_for(h, w)
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.addPairwiseGaussian(sxy=g_sxy, compat=p.gauss_compat)
    d.addPairwiseBilateral(sxy=b_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(img), compat=p.bilateral_compat)
    return d


def crf_labels(img: np.ndarray, label_maps: list[np.ndarray], n_labels: int, p: CRFConfig, shared: bool = True,
               device=None) -> list[np.ndarray]:
    """Refine each label map (values 0..n_labels-1) with the label CRF; returns the argmax maps."""
    if backend(p, device) == "torch":
        from wsss.pseudo.crf_torch import crf_labels_torch

        return crf_labels_torch(img, label_maps, n_labels, p, device=device)
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


def crf_probabilities(img: np.ndarray, probs: np.ndarray, p: CRFConfig, device=None) -> np.ndarray:
    """Probability CRF (deeplab-pytorch's post-processing): unary = -log(probs); returns refined probs."""
    if backend(p, device) == "torch":
        from wsss.pseudo.crf_torch import crf_probabilities_torch

        return crf_probabilities_torch(img, probs, p, device=device)
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    d = _dense_crf(img, c, p)
    d.setUnaryEnergy(unary_from_softmax(np.ascontiguousarray(probs, dtype=np.float32)))
    return np.asarray(d.inference(p.iters), dtype=np.float32).reshape(c, h, w)
