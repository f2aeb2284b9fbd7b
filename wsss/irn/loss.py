"""IRN's boundary loss: pair affinities from the boundary map, and the affinity loss.

The affinity of a pair is 1 - (the largest boundary value on its path): a pair
with a boundary between its ends has affinity near 0. The loss pulls the affinity
of positive pairs to 1 and of negative pairs to 0:

    bg_pos = sum(bg_pos_label * -log(a + 1e-5)) / (sum(bg_pos_label) + 1e-5)
    fg_pos = the same over foreground positives
    neg    = sum(neg_label * -log(1 + 1e-5 - a)) / (sum(neg_label) + 1e-5)
    loss   = (bg_pos / 2 + fg_pos / 2 + neg) / 2

Each ratio is taken over the whole batch (sums over every image, then one division),
as the reference does.
"""
from __future__ import annotations

import torch

from wsss.irn.indexing import PairIndex


def pair_affinity(boundary: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """Affinities [B, n_offsets, n_sources] (or [n_offsets, n_sources]) of the training
    pairs of boundary maps [B, h, w] (or [h, w]) with values in [0, 1]."""
    single = boundary.dim() == 2
    if single:
        boundary = boundary[None]
    b = boundary.shape[0]
    out = []
    for (dy, dx), path in zip(index.offsets, index.paths):
        along = torch.stack([index.shifted(boundary, y, x) for y, x in path], 1)
        # max with indices (not amax): on equal values the gradient goes to one pixel, the
        # first of the path (the far end first), as the reference's max_pool2d does
        out.append(1 - along.max(1).values.reshape(b, -1))
    aff = torch.stack(out, 1)
    return aff[0] if single else aff


def boundary_loss(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor,
                  counts: torch.Tensor | None = None, world_size: int = 1) -> dict:
    """The loss terms (tensors): ``loss`` (what trains), ``bg_pos``, ``fg_pos``, ``neg``.

    ``counts``: the whole batch's (bg_pos, fg_pos, neg) pair counts when this process holds a
    share of it (one of ``world_size`` DDP ranks): each ratio is then divided by
    (count + 1e-5) / world_size, so the ranks' averaged gradients are the whole batch's.

    ``loss`` is half the affinity terms' sum because the reference's total is
    ``(pos + neg) / 2 + (displacement terms) / 2``; the displacement branch has its own
    parameters and the backbone is detached, so with the halving the boundary branch
    gets exactly the reference's gradients.
    """
    pos_term = -torch.log(aff + 1e-5)
    neg_term = -torch.log(1.0 + 1e-5 - aff)
    if counts is None:
        counts, world_size = torch.stack([bg_pos.sum(), fg_pos.sum(), neg.sum()]), 1
    n_bg, n_fg, n_neg = ((counts + 1e-5) / world_size).unbind()
    bg = torch.sum(bg_pos * pos_term) / n_bg
    fg = torch.sum(fg_pos * pos_term) / n_fg
    ng = torch.sum(neg * neg_term) / n_neg
    pos = bg / 2 + fg / 2
    return {"loss": (pos + ng) / 2, "bg_pos": bg, "fg_pos": fg, "neg": ng}
