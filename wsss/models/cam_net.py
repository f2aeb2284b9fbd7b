"""The baseline CAM network (IRN/GSLM's ResNet-50 classifier; GSLM's GLM).

stages 1-4 of a stride-16-no-dilation ResNet -> 1x1 conv without bias (the
classifier) -> global average pool -> logits; CAM = ReLU(classifier output).
In training, stage 2's output is detached (``model.detach_stage``), so stages
1-2 get no gradient; they run under no_grad, which also skips their backward.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsss.models.backbones import ResNetBackbone
from wsss.registry import register_model


def multilabel_soft_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(logits, labels)


class CAMModel(nn.Module):
    """What every CAM model offers the engine and make_cam.

    ``forward(x)`` returns ``{"logits": [B, K], "cam": [B, K, h, w]}`` where
    ``cam`` is the classifier's raw (pre-ReLU) output at feature resolution;
    ``forward_cam(x)`` the ReLU'd CAM used for inference.
    """

    backbone: ResNetBackbone
    classifier: nn.Conv2d

    def __init__(self, backbone: ResNetBackbone, detach_stage: int):
        super().__init__()
        self.backbone = backbone
        self.detach_stage = detach_stage
        for i, stage in enumerate(backbone.stages[:detach_stage]):
            for p in stage.parameters():
                p.requires_grad_(False)

    def stem_features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Run stages 1..upto; the first ``detach_stage`` run without autograd."""
        stages = self.backbone.stages
        n_frozen = min(self.detach_stage, upto)
        if n_frozen:
            with torch.no_grad():
                for stage in stages[:n_frozen]:
                    x = stage(x)
            x = x.detach()
        for stage in stages[n_frozen:upto]:
            x = stage(x)
        return x

    def head(self, features: torch.Tensor) -> dict:
        cam = self.classifier(features)
        return {"logits": cam.mean(dim=(2, 3)), "cam": cam}

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward(x)["cam"])

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, newly added parameters) that require gradients."""
        head_ids = {id(p) for p in self.head_parameters()}
        backbone = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        head = [p for p in self.head_parameters() if p.requires_grad]
        return backbone, head

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())


class CAMNet(CAMModel):
    def __init__(self, backbone: ResNetBackbone, num_classes: int, detach_stage: int = 2):
        super().__init__(backbone, detach_stage)
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> dict:
        return self.head(self.stem_features(x, 4))


def build_backbone(cfg) -> ResNetBackbone:
    m = cfg.model
    return ResNetBackbone(m.backbone, output_stride=m.output_stride, stride_mode=m.stride_mode,
                          frozen_bn=m.frozen_bn, freeze_stem=m.freeze_stem, weights=m.weights)


@register_model("cam_net")
def build_cam_net(cfg) -> CAMNet:
    return CAMNet(build_backbone(cfg), cfg.data.num_classes, cfg.model.detach_stage)
