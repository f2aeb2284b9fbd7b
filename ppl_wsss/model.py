"""The PPL classification network on the shared ResNet stages.

Progressive (Fig. 2): one split point k at a time. The plain path runs stages
1..N; the stage-k output also goes through P, stages k+1..N (the same blocks,
the same weights) and M. C concatenates [merged patch features, full-path
features] along channels -> one 1x1 classifier (no bias) -> GAP -> logits.

Explicit (Fig. 5): every split point in one forward pass. Branch k takes the
plain path's stage-k output *detached* (no gradient from a patch branch into
stages <= k), then P, stages k+1..N, M. C concatenates every branch and the
plain path's final features -> one classifier.

Which stages train: with ``detach_below_split`` (config ``ppl.detach_below_split``,
default on) the frozen stages are 1..min(model.detach_stage, k) for the split
point k in use (explicit: the lowest split point), so every block after a split
trains, as the figures draw it; off, the baseline's 1..model.detach_stage.

BN statistics: the patch branches normalise with the running statistics and
never update them, also in training, so only the full path writes them and no
patch sees another patch through batch statistics (docs/ppl.md).

The CAM comes from the classifier on the concatenated features, or (config
``ppl.cam_source: full``) from the classifier's full-path half on the
full-path features alone.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ppl_wsss.patch import merge_patches, split_patches
from wsss.models.backbones import ResNetBackbone
from wsss.models.cam_net import CAMModel


@contextlib.contextmanager
def running_stats_only(modules: list[nn.Module]):
    """Every BN in ``modules`` normalises with its running statistics and leaves them as
    they are: patch batches (lower variance than the full map) never write the statistics
    the full path and inference use, and each patch is normalised on its own."""
    bns = [m for mod in modules for m in mod.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.training = False
    try:
        yield
    finally:
        for m in bns:
            m.training = True


class PPLNet(CAMModel):
    def __init__(self, backbone: ResNetBackbone, num_classes: int, detach_stage: int, split_points: list[int],
                 grids: list[int], explicit: bool, cam_source: str = "concat", pad_mode: str = "replicate",
                 detach_below_split: bool = True, merge_positions: str = "identity"):
        # stages are frozen per split point (set_detach), not once for the whole model
        super().__init__(backbone, 0)
        if not split_points:
            raise ValueError("PPL needs at least one split point")
        for k in split_points:
            if not 1 <= k <= 3:
                raise ValueError(f"PPL split point must be after stage 1, 2 or 3 (before the last stage), got {k}")
        if len(grids) != len(split_points):
            raise ValueError("one grid per split point")
        if cam_source not in ("concat", "full"):
            raise ValueError(f"ppl.cam_source must be concat or full, got {cam_source!r}")
        self.num_classes = num_classes
        self.explicit = explicit
        self.split_points = list(split_points)
        self.grids = list(grids)
        if merge_positions not in ("identity", "permuted"):
            raise ValueError(f"ppl.merge_positions must be identity or permuted, got {merge_positions!r}")
        self.cam_source = cam_source
        self.merge_positions = merge_positions
        self.pad_mode = pad_mode
        self.base_detach_stage = detach_stage
        self.detach_below_split = detach_below_split
        # what the backbone froze itself (the stem) stays frozen whatever the split point
        self._backbone_frozen = frozenset(n for n, p in backbone.named_parameters() if not p.requires_grad)
        # progressive: the active (split, grid); explicit: all of them at once
        self.active = 0
        n_maps = len(split_points) + 1 if explicit else 2
        self.feat_channels = backbone.out_channels
        self.classifier = nn.Conv2d(n_maps * backbone.out_channels, num_classes, 1, bias=False)
        self.set_detach()

    def set_stage(self, index: int) -> None:
        """Progressive training: use split point ``split_points[index]`` with its grid."""
        if self.explicit:
            raise RuntimeError("the explicit model uses all split points at once")
        self.active = index
        self.set_detach()

    @property
    def branches(self) -> list[tuple[int, int]]:
        if self.explicit:
            return list(zip(self.split_points, self.grids))
        return [(self.split_points[self.active], self.grids[self.active])]

    def effective_detach_stage(self) -> int:
        """Stages 1..this get no gradient for the branches in use."""
        if not self.detach_below_split:
            return self.base_detach_stage
        return min(self.base_detach_stage, min(k for k, _ in self.branches))

    def set_detach(self) -> None:
        """Freeze stages 1..effective_detach_stage() and unfreeze the rest, so the optimizer
        built after a progressive stage's setup holds exactly the blocks that stage trains."""
        self.detach_stage = d = self.effective_detach_stage()
        for i, stage in enumerate(self.backbone.stages):
            for name, p in stage.named_parameters():
                p.requires_grad_(i >= d and f"stage{i + 1}.{name}" not in self._backbone_frozen)

    def remaining_stride(self, k: int) -> int:
        """The total stride of stages k+1..4: the stride P must lay the patches out for."""
        strides = self.backbone.stage_strides()
        return strides[3] // strides[k - 1]

    def run_stages(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Stages start+1..4 (1-based), the frozen ones without autograd."""
        for i in range(start, 4):
            stage = self.backbone.stages[i]
            if i < self.detach_stage:
                with torch.no_grad():
                    x = stage(x)
            else:
                x = stage(x)
        return x

    def patch_path(self, feat: torch.Tensor, k: int, grid: int, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """P -> stages k+1..N on every patch (one batched call) -> M, cell for cell on the full path's grid."""
        patches, info = split_patches(feat, grid, self.pad_mode, stride=self.remaining_stride(k))
        with running_stats_only(self.backbone.stages[k:]):
            out = self.run_stages(patches, k)
        if self.merge_positions == "permuted" and grid > 1:
            # the control: patch i's output goes to patch i+1's cells (patches are grid-major, then batch)
            out = out.reshape(grid * grid, -1, *out.shape[1:]).roll(1, dims=0).reshape(out.shape)
        return merge_patches(out, info, out_size)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(merged patch features per branch, full-path features)."""
        wanted = {k for k, _ in self.branches}
        taps: dict[int, torch.Tensor] = {}
        h = x
        for i in range(4):
            h = self._stage(h, i)
            if i + 1 in wanted:
                taps[i + 1] = h
        # the full path has run (and written the BN statistics) before any branch reads them
        full = h
        merged = []
        for k, g in self.branches:
            feat = taps[k].detach() if self.explicit else taps[k]
            merged.append(self.patch_path(feat, k, g, tuple(full.shape[-2:])))
        return merged, full

    def _stage(self, x: torch.Tensor, i: int) -> torch.Tensor:
        stage = self.backbone.stages[i]
        if i < self.detach_stage:
            with torch.no_grad():
                return stage(x).detach()
        return stage(x)

    def full_half_cam(self, full: torch.Tensor) -> torch.Tensor:
        """The classifier's full-path half applied to the full-path features alone."""
        return F.conv2d(full, self.classifier.weight[:, -self.feat_channels:])

    def forward(self, x: torch.Tensor) -> dict:
        """Logits always come from the concatenation; ``cam`` is the (pre-ReLU) map that
        inference uses, so losses on it (GSLM's seed reactivation) act on the same map."""
        merged, full = self.features(x)
        out = self.head(torch.cat([*merged, full], dim=1))
        if self.cam_source == "full":
            out["cam"] = self.full_half_cam(full)
        return out

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        if self.cam_source == "concat":
            return F.relu(self.forward(x)["cam"])
        return F.relu(self.full_half_cam(self.stem_features(x, 4)))  # no patch path needed
