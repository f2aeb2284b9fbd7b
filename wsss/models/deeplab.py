"""DeepLab for the segmentation stage.

* DeepLab v2: a ResNet (101 by default) at output stride 8 through dilation
  (layer3 rate 2, layer4 rate 4 in every block, as the Caffe original), and an
  ASPP that is the *sum* of four 3x3 dilated convs (rates 6, 12, 18, 24).
* DeepLab v3: taken from ``torchvision.models.segmentation`` as shipped.

Backbone weights: a torchvision weights name, a local file (an ImageNet backbone
or, e.g., a COCO-pretrained DeepLab: its backbone tensors are used), or none.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsss.models.backbones import ResNetBackbone, load_backbone_weights


class ASPPSum(nn.Module):
    """DeepLab v2's ASPP: four parallel 3x3 dilated convs whose outputs are summed."""

    def __init__(self, in_channels: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)


class DeepLabV2(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "resnet101", weights: str = "none", output_stride: int = 8,
                 frozen_bn: bool = True, rates=(6, 12, 18, 24)):
        super().__init__()
        # DeepLab trains conv1 (only BN is frozen, scale and shift included, as in Caffe)
        self.backbone = ResNetBackbone(backbone, output_stride=output_stride, stride_mode="uniform", frozen_bn=frozen_bn,
                                       freeze_stem=False, weights=weights)
        if frozen_bn:
            _freeze_bn(self.backbone)
        self.aspp = ASPPSum(self.backbone.out_channels, num_classes, rates)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at stride ``output_stride``."""
        return self.aspp(self.backbone(x))

    def head_modules(self) -> list[nn.Module]:
        return [self.aspp]


class DeepLabV3(nn.Module):
    """torchvision's DeepLab v3 (ResNet-50/101), returning the logits at input size."""

    def __init__(self, num_classes: int, backbone: str = "resnet101", weights: str = "none", frozen_bn: bool = True):
        super().__init__()
        from torchvision.models import segmentation

        builders = {"resnet50": segmentation.deeplabv3_resnet50, "resnet101": segmentation.deeplabv3_resnet101}
        if backbone not in builders:
            from wsss.config import ConfigError

            raise ConfigError(f"seg.backbone: torchvision ships DeepLab v3 with resnet50 or resnet101, not {backbone}")
        self.net = builders[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        self._load_backbone(backbone, weights)
        self.frozen_bn = frozen_bn
        if frozen_bn:
            _freeze_bn(self.net.backbone)
        self.output_stride = 8

    def _load_backbone(self, arch: str, weights: str) -> None:
        import torchvision

        tmp = getattr(torchvision.models, arch)(weights=None)
        load_backbone_weights(tmp, arch, weights)
        sd = {k: v for k, v in tmp.state_dict().items() if not k.startswith("fc.")}
        self.net.backbone.load_state_dict(sd)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for m in self.net.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]

    def head_modules(self) -> list[nn.Module]:
        return [self.net.classifier]


def build_deeplab(seg_cfg, num_classes: int, pretrained: bool = True) -> nn.Module:
    """``num_classes`` includes the background."""
    weights = seg_cfg.weights if pretrained else "none"
    if seg_cfg.arch == "deeplabv2":
        return DeepLabV2(num_classes, seg_cfg.backbone, weights, seg_cfg.output_stride, seg_cfg.frozen_bn, seg_cfg.aspp_rates)
    return DeepLabV3(num_classes, seg_cfg.backbone, weights, seg_cfg.frozen_bn)


def seg_param_groups(model: nn.Module, head_lr_mult: float, head_bias_lr_mult: float) -> list[dict]:
    """Backbone at 1x; head weights at 10x; head biases at 20x without weight decay (DeepLab's recipe)."""
    head_w, head_b = [], []
    for m in model.head_modules():
        for name, p in m.named_parameters():
            (head_b if name.endswith("bias") else head_w).append(p)
    head_ids = {id(p) for p in head_w + head_b}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [
        {"params": backbone, "lr_mult": 1.0, "name": "backbone"},
        {"params": head_w, "lr_mult": head_lr_mult, "name": "head_weight"},
        {"params": head_b, "lr_mult": head_bias_lr_mult, "weight_decay": 0.0, "name": "head_bias"},
    ]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, n_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the pixels whose label is not 255, logits upsampled to the label size.

    Normalised by the number of valid pixels (``n_valid``, default this batch's; at least 1),
    so a batch that is all 255 gives zero loss instead of NaN.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits.float(), target, ignore_index=255, reduction="sum")
    if n_valid is None:
        n_valid = (target != 255).sum()
    return total / n_valid.clamp(min=1)
