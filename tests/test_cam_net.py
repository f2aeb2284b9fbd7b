import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from wsss.cam.training import cam_param_groups
from wsss.models.backbones import ResNetBackbone
from wsss.models.cam_net import CAMNet, multilabel_soft_margin


def reference_irn_forward(tv: torchvision.models.ResNet, weight: torch.Tensor, x: torch.Tensor):
    """The IRN/GSLM CAM network written out plainly from a torchvision ResNet-50."""
    tv.layer4[0].conv2.stride = (1, 1)
    tv.layer4[0].downsample[0].stride = (1, 1)
    h = tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))
    h = tv.layer2(h).detach()
    h = tv.layer4(tv.layer3(h))
    logits = F.conv2d(h.mean(dim=(2, 3), keepdim=True), weight).flatten(1)  # gap2d, then the 1x1 classifier
    cam = F.relu(F.conv2d(h, weight))
    return logits, cam


def _load_tv(bb: ResNetBackbone, tv) -> None:
    m = {"conv1": "stage1.0", "bn1": "stage1.1", "layer1": "stage1.4", "layer2": "stage2", "layer3": "stage3", "layer4": "stage4"}
    sd = {}
    for k, v in tv.state_dict().items():
        head = k.split(".")[0]
        if head in m:
            sd[m[head] + k[len(head):]] = v
    bb.load_state_dict(sd)


def test_matches_the_reference_network():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    net = CAMNet(ResNetBackbone("resnet50", output_stride=16, weights="none"), num_classes=20).eval()
    _load_tv(net.backbone, tv)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ref_logits, ref_cam = reference_irn_forward(tv, net.classifier.weight, x)
        out = net(x)
        cam = net.forward_cam(x)
    assert out["logits"].shape == (2, 20) and cam.shape == (2, 20, 4, 5)
    assert torch.allclose(out["logits"], ref_logits, atol=1e-5)
    assert torch.allclose(cam, ref_cam, atol=1e-5)
    assert net.classifier.bias is None


def test_no_gradient_into_stages_1_2_and_frozen_bn():
    net = CAMNet(ResNetBackbone("resnet18", output_stride=16, weights="none", frozen_bn=True), 4, detach_stage=2)
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    out = net(torch.randn(2, 3, 64, 64))
    multilabel_soft_margin(out["logits"], torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])).backward()
    for p in list(net.backbone.stage1.parameters()) + list(net.backbone.stage2.parameters()):
        assert p.grad is None and not p.requires_grad
    assert all(p.grad is not None for p in net.backbone.stage3.parameters())
    assert net.classifier.weight.grad is not None


def test_detach_stage_zero_trains_everything():
    net = CAMNet(ResNetBackbone("resnet18", weights="none", frozen_bn=False, freeze_stem=False), 3, detach_stage=0)
    out = net(torch.randn(2, 3, 32, 32))
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_multilabel_soft_margin_hand_computed():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(sig(0.0))) / 3
    assert multilabel_soft_margin(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_param_groups_head_at_10x():
    net = CAMNet(ResNetBackbone("resnet18", weights="none"), 3)
    groups = cam_param_groups(net, 10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[1]["params"] == [net.classifier.weight] and groups[1]["lr_mult"] == 10.0
    from wsss.engine.optim import build_sgd

    opt = build_sgd(groups, lr=0.1, momentum=0.0, weight_decay=1e-4)
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(1.0)]
    assert all(g["momentum"] == 0.0 for g in opt.param_groups)
    ids = {id(p) for p in groups[0]["params"]}
    assert not any(id(p) in ids for p in net.backbone.stage1.parameters())  # frozen: not optimised
