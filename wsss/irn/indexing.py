"""IRN's pixel pairs at stride 4: which pairs are compared and the path between them.

A pair is a source pixel p and p + d for an offset d of a half disk of radius r:
``dy >= 0``, ``dx > 0`` when ``dy == 0``, ``dy^2 + dx^2 < r^2`` (the other half is the
same pairs seen from the other end). The path of a pair is every pixel of the box
spanned by 0 and d whose distance to the line through them is below 1.

Training compares only sources whose every partner lies inside the map: rows
``[0, h - m)``, columns ``[m, w - m)`` with ``m = r - 1`` (the reference's
``radius_floor``); a pair's tensors are laid out ``[offset, source]`` with the
sources in row-major order. The offsets come in the reference's order (see
:func:`ordered_offsets`), so our affinities and labels line up with its tensors
element for element.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch


def half_disk_offsets(radius: int) -> list[tuple[int, int]]:
    """The offsets (dy, dx) of the half disk, in the order the reference enumerates them."""
    if radius < 2:
        raise ValueError(f"radius must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dx * dx + dy * dy < radius * radius:
                offsets.append((dy, dx))
    return offsets


def segment_path(dy: int, dx: int) -> list[tuple[int, int]]:
    """The pixels between 0 and (dy, dx), both ends included, the far end first.

    ``(dy*x - dx*y)^2 / (dy^2 + dx^2) < 1`` is the reference's test, written in
    integers (exact). The sort by -(|y| + |x|) is stable, as the reference's, so paths
    list their pixels in the same order (it decides which of two equal values
    ``max`` reports, and thus where the gradient goes).
    """
    length_sq = dy * dy + dx * dx
    if length_sq == 0:
        raise ValueError("the zero offset has no path")
    pts = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            if (dy * x - dx * y) ** 2 < length_sq:
                pts.append((y, x))
    pts.sort(key=lambda p: -abs(p[0]) - abs(p[1]))
    return pts


def ordered_offsets(radius: int) -> list[tuple[int, int]]:
    """The half disk grouped by path length, shortest first, enumeration order within a
    length: the reference stores its path index tensors per length and concatenates
    them in that order, so this is the order of its affinity and label tensors."""
    offs = half_disk_offsets(radius)
    return sorted(offs, key=lambda d: len(segment_path(*d)))  # sorted() is stable


@dataclass(frozen=True)
class PairIndex:
    """The pairs of one radius: offsets (reference order), their paths, the source margin."""

    radius: int
    offsets: tuple = field(init=False)
    paths: tuple = field(init=False)

    def __post_init__(self):
        offs = ordered_offsets(self.radius)
        object.__setattr__(self, "offsets", tuple(offs))
        object.__setattr__(self, "paths", tuple(tuple(segment_path(*d)) for d in offs))

    @property
    def margin(self) -> int:
        return self.radius - 1

    def source_window(self, h: int, w: int) -> tuple[int, int]:
        """(rows, cols) of the training sources of an h x w map."""
        m = self.margin
        ch, cw = h - m, w - 2 * m
        if ch <= 0 or cw <= 0:
            raise ValueError(f"a {h}x{w} map is too small for radius {self.radius}")
        return ch, cw

    def shifted(self, x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """``x[..., p + (dy, dx)]`` for every training source p: a view [..., ch, cw]."""
        ch, cw = self.source_window(x.shape[-2], x.shape[-1])
        m = self.margin
        return x[..., dy:dy + ch, m + dx:m + dx + cw]


@lru_cache(maxsize=8)
def pair_index(radius: int) -> PairIndex:
    return PairIndex(radius)


def relation_labels(labels: torch.Tensor, index: PairIndex, ignore_index: int = 255):
    """IRN's pair labels from label maps at stride 4 ([B, h, w] or [h, w]; 0 background,
    c + 1 class c, ``ignore_index`` uncertain).

    Returns (bg_pos, fg_pos, neg), float tensors [B, n_offsets, n_sources] (no batch
    dimension for a single map): a pair counts when neither end is uncertain; positive
    when both ends carry the same label, split into background and foreground
    positives; negative otherwise.

    The reference tests ``label < 21`` for "not uncertain" (VOC's 20 classes); here it is
    ``!= ignore_index``, which is the same on VOC and also keeps COCO's classes >= 21.
    """
    single = labels.dim() == 2
    if single:
        labels = labels[None]
    src = index.shifted(labels, 0, 0).reshape(labels.shape[0], -1)
    dst = torch.stack([index.shifted(labels, dy, dx).reshape(labels.shape[0], -1) for dy, dx in index.offsets], 1)
    src = src[:, None]
    valid = (src != ignore_index) & (dst != ignore_index)
    equal = src == dst
    pos = equal & valid
    bg_pos = (pos & (src == 0)).float()
    fg_pos = (pos & (src > 0)).float()
    neg = (~equal & valid).float()
    if single:
        return bg_pos[0], fg_pos[0], neg[0]
    return bg_pos, fg_pos, neg
