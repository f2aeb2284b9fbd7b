"""IRN's class boundary network (the semantic half of IRN; no displacement branch).

Backbone: a torchvision ResNet with layer4's stride removed (strides 2, 2, 2, 1:
``output_stride=16``, ``stride_mode="stride"``), ImageNet weights, frozen: always in
eval mode and run without autograd, so it never changes (the reference detaches
every stage's output and leaves the backbone out of the optimiser).

Five branches read the stem (conv1, bn1, ReLU, max-pool: stride 4, 64 channels),
layer1, layer2, layer3 and layer4: each a 1x1 conv without bias to 32 channels,
GroupNorm with 4 groups, for the strided stages a bilinear upsampling
(``align_corners=False``) to stride 4, then ReLU (upsampling before the ReLU, as the
reference). The upsampled maps are cut to the stem branch's size (top-left), the
five are concatenated (160 channels) and a 1x1 conv with bias gives one logit per
pixel; the boundary map is its sigmoid.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsss.models.backbones import ResNetBackbone

BRANCH_CHANNELS = 32
GN_GROUPS = 4
STEM_CHANNELS = 64


def _branch(in_channels: int, upsample: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, BRANCH_CHANNELS, 1, bias=False), nn.GroupNorm(GN_GROUPS, BRANCH_CHANNELS)]
    if upsample > 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BoundaryNet(nn.Module):
    """``forward(x)`` -> boundary logits [B, 1, ceil(H/4), ceil(W/4)]."""

    def __init__(self, arch: str = "resnet50", weights: str = "none"):
        super().__init__()
        self.backbone = ResNetBackbone(arch, output_stride=16, stride_mode="stride", frozen_bn=True,
                                       freeze_stem=True, weights=weights)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        strides = self.backbone.stage_strides()  # [4, 8, 16, 16]
        ins = [STEM_CHANNELS] + list(self.backbone.stage_channels)
        ups = [1] + [s // 4 for s in strides]
        # edge1..edge6: the reference's fc_edge1..fc_edge6, layer for layer
        self.edge1, self.edge2, self.edge3, self.edge4, self.edge5 = (_branch(c, u) for c, u in zip(ins, ups))
        self.edge6 = nn.Conv2d(5 * BRANCH_CHANNELS, 1, 1, bias=True)
        self.backbone.eval()

    @property
    def branches(self) -> list[nn.Module]:
        return [self.edge1, self.edge2, self.edge3, self.edge4, self.edge5]

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's five maps: stem (stride 4), layer1..layer4."""
        bb = self.backbone
        with torch.no_grad():
            stem = bb.stage1[:4](x)
            feats = [stem, bb.stage1[4](stem)]
            for stage in (bb.stage2, bb.stage3, bb.stage4):
                feats.append(stage(feats[-1]))
        return [f.detach() for f in feats]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.stage_features(x)
        maps = [branch(f) for branch, f in zip(self.branches, feats)]
        h, w = maps[1].shape[-2:]
        maps = [m[..., :h, :w] for m in maps]
        return self.edge6(torch.cat(maps, 1))

    def edge_parameters(self) -> list[nn.Parameter]:
        return [p for branch in self.branches + [self.edge6] for p in branch.parameters()]


def feature_size(hw: tuple[int, int], stride: int = 4) -> tuple[int, int]:
    return math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)


@torch.no_grad()
def boundary_map(model: BoundaryNet, image: torch.Tensor, canvas: int = 512) -> torch.Tensor:
    """The boundary map [ceil(H/4), ceil(W/4)] of one normalised image [3, H, W].

    As the reference's inference: the image and its horizontal flip, each padded with 0
    on the right and bottom to a ``canvas`` x ``canvas`` square, run as one batch; both
    logit maps are cut to the image's stride-4 size, the flip's is flipped back, and the
    boundary is ``sigmoid(logit / 2 + flipped logit / 2)`` (logits averaged, then one
    sigmoid).

    An image with a side longer than ``canvas`` is padded to the square of its longer
    side instead. The reference pads by ``canvas - side``, which for a longer side is a
    negative pad, i.e. a crop; its boundary map then no longer matches the CAM and its
    walk stops on an out-of-range index (COCO has such images, VOC none). The square keeps the
    reference's geometry: with ``canvas`` set to the longer side, the reference computes
    exactly this map.
    """
    h, w = image.shape[-2:]
    fh, fw = feature_size((h, w))
    x = torch.stack([image, image.flip(-1)])
    side = max(canvas, h, w)
    x = F.pad(x, [0, side - w, 0, side - h])
    logits = model(x)[:, 0, :fh, :fw].float()
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)
