"""torchvision ResNets split into the four stages the WSSS networks use.

    stage1 = conv1, bn1, relu, maxpool, layer1      stride 4
    stage2 = layer2                                 stride 8
    stage3 = layer3                                 stride 16 (1 at output stride 8)
    stage4 = layer4                                 stride 32 (1 at output stride 16/8)

The CAM networks' rule is "output stride 16 without dilation": layer4's first
block gets stride 1 on its strided 3x3 conv and its downsample conv, and no
dilation (IRN/GSLM). ``stride_mode="dilation"`` instead reproduces torchvision's
``replace_stride_with_dilation`` (a different network) and ``"uniform"`` the
DeepLab v2 layout (every 3x3 conv of a dilated layer uses the layer's rate).
"""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

from wsss.config import BACKBONES

ARCHS = {name: int(name.removeprefix("resnet")) for name in BACKBONES}  # name -> depth


class WeightsError(RuntimeError):
    """Backbone weights that cannot be found or do not fit; the message says what to do."""


def _strided_conv(block: nn.Module) -> nn.Conv2d:
    return block.conv2 if isinstance(block, Bottleneck) else block.conv1


def _three_by_three(block: nn.Module) -> list[nn.Conv2d]:
    return [block.conv2] if isinstance(block, Bottleneck) else [block.conv1, block.conv2]


def _set_dilation(conv: nn.Conv2d, d: int) -> None:
    conv.dilation = (d, d)
    conv.padding = (d, d)


def remove_stride(layer: nn.Sequential, dilation: int = 1, previous_dilation: int = 1, uniform: bool = False) -> None:
    """Make a ResNet layer keep its input resolution, optionally dilating its 3x3 convs.

    With ``uniform=False`` the first block's 3x3 conv keeps ``previous_dilation``
    (torchvision's convention); with ``uniform=True`` every block uses ``dilation``.
    """
    first = layer[0]
    _strided_conv(first).stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1
    for i, block in enumerate(layer):
        d = previous_dilation if (i == 0 and not uniform) else dilation
        for conv in _three_by_three(block):
            _set_dilation(conv, d)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet as four stages, with the frozen-BN and frozen-stem options."""

    def __init__(self, arch: str = "resnet50", output_stride: int = 16, stride_mode: str = "stride",
                 frozen_bn: bool = True, freeze_stem: bool = True, weights: str = "none"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"model.backbone: unknown ResNet {arch!r}; choose from {', '.join(ARCHS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"model.output_stride must be 8, 16 or 32, got {output_stride}")
        if stride_mode not in ("stride", "dilation", "uniform"):
            raise ValueError(f"unknown stride_mode {stride_mode!r}")
        net: ResNet = getattr(torchvision.models, arch)(weights=None)
        load_backbone_weights(net, arch, weights)
        layers = []
        if output_stride <= 16:
            layers.append(net.layer4)
        if output_stride <= 8:
            layers.insert(0, net.layer3)
        if stride_mode == "stride":
            for layer in layers:
                remove_stride(layer)
        else:
            uniform = stride_mode == "uniform"
            d = 1
            for layer in layers:
                prev, d = d, d * 2
                remove_stride(layer, dilation=d, previous_dilation=prev, uniform=uniform)
        self.arch = arch
        self.output_stride = output_stride
        self.frozen_bn = frozen_bn
        self.stage1 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.stage2 = net.layer2
        self.stage3 = net.layer3
        self.stage4 = net.layer4
        expansion = 4 if isinstance(net.layer1[0], Bottleneck) else 1
        self.stage_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.out_channels = self.stage_channels[-1]
        if freeze_stem:
            for p in list(net.conv1.parameters()) + list(net.bn1.parameters()):
                p.requires_grad_(False)
        if frozen_bn:
            self.train(self.training)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def stage_strides(self) -> list[int]:
        s3 = 8 if self.output_stride <= 8 else 16
        s4 = self.output_stride
        return [4, 8, s3, s4]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            # running statistics never update; the affine parameters still train
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------
def _unwrap_state_dict(obj, source: str) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: not a state dict of tensors")
    return to_torchvision_names(obj)


def to_torchvision_names(state: dict) -> dict:
    """A state dict under torchvision's ResNet names (wrapper prefixes dropped, our stage
    names mapped back: stage1.0 -> conv1, stage2 -> layer2, ...)."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[_TORCHVISION_NAME.get(k.split(".")[0], lambda k: k)(k)] = v
    return out


# our stage naming (checkpoints of this project's CAM networks) -> torchvision's names
_TORCHVISION_NAME = {
    "stage2": lambda k: "layer2" + k[len("stage2"):],
    "stage3": lambda k: "layer3" + k[len("stage3"):],
    "stage4": lambda k: "layer4" + k[len("stage4"):],
    "stage1": lambda k: {"0": "conv1", "1": "bn1", "4": "layer1"}[k.split(".")[1]] + k[len("stage1.x"):],
}


def load_state_dict_checked(module: nn.Module, state: dict, source: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """load_state_dict that fails with a message listing every tensor that does not fit."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own_keys = {k for k in own if not k.startswith(ignore_prefixes)}
    missing = sorted(own_keys - set(state))
    unexpected = sorted(set(state) - own_keys)
    shape = sorted(k for k in set(state) & own_keys if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append("shape mismatch: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape[:6])
                         + (f" (+{len(shape) - 6} more)" if len(shape) > 6 else ""))
        if missing:
            parts.append(f"missing: {', '.join(missing[:6])}" + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""))
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:6])}" + (f" (+{len(unexpected) - 6} more)" if len(unexpected) > 6 else ""))
        raise WeightsError(f"{source}: does not fit this model ({type(module).__name__}); " + "; ".join(parts))
    module.load_state_dict(state, strict=not ignore_prefixes)


def torchvision_weights_path(arch: str, name: str) -> tuple[str, Path]:
    try:
        enum = torchvision.models.get_model_weights(arch)
        w = enum[name] if name != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        choices = ", ".join(m.name for m in torchvision.models.get_model_weights(arch))
        raise WeightsError(f"model.weights: {name!r} is neither a file nor a torchvision weights name for {arch} ({choices})") from None
    url = w.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_weights_file(path: str | os.PathLike) -> dict:
    """A state dict from a local file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for unsafe or broken files
        raise WeightsError(f"{path}: refused or unreadable weights file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return _unwrap_state_dict(obj, str(path))


def fetch_torchvision_weights(arch: str, name: str) -> dict:
    url, cached = torchvision_weights_path(arch, name)
    if cached.is_file():
        return _unwrap_state_dict(torch.load(cached, map_location="cpu", weights_only=True), str(cached))
    try:
        sd = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise WeightsError(
            f"{arch} weights {name} are not in the torch hub cache and could not be downloaded ({type(e).__name__}); "
            f"download {url} and put it at {cached} (or set model.weights to a local file, or none)"
        ) from None
    return _unwrap_state_dict(sd, url)


def load_backbone_weights(net: ResNet, arch: str, weights: str) -> None:
    """``weights``: 'none', a local file, or a torchvision weights name (IMAGENET1K_V1, ...)."""
    if not weights or weights.lower() == "none":
        return
    looks_like_path = os.sep in weights or weights.endswith((".pth", ".pt", ".bin", ".ckpt")) or Path(weights).exists()
    sd = load_weights_file(weights) if looks_like_path else fetch_torchvision_weights(arch, weights)
    # the heads of classification / segmentation checkpoints are not backbone weights
    sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "aspp.", "aux_classifier."))}
    load_state_dict_checked(net, sd, weights, ignore_prefixes=("fc.",))
