import urllib.error

import pytest
import torch
import torchvision

from wsss.models.backbones import ResNetBackbone, WeightsError, load_state_dict_checked


@pytest.mark.parametrize("arch,channels", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048)])
def test_shapes_and_strides(arch, channels):
    x = torch.randn(1, 3, 64, 64)
    for os_, side in ((32, 2), (16, 4), (8, 8)):
        bb = ResNetBackbone(arch, output_stride=os_, weights="none").eval()
        with torch.no_grad():
            feats = []
            h = x
            for st in bb.stages:
                h = st(h)
                feats.append(h.shape[-1])
        assert h.shape == (1, channels, side, side)
        assert feats == [64 // s for s in bb.stage_strides()]
        assert bb.out_channels == channels


def test_stride16_has_no_dilation_and_differs_from_dilated():
    torch.manual_seed(0)
    a = ResNetBackbone("resnet50", output_stride=16, stride_mode="stride", weights="none").eval()
    b = ResNetBackbone("resnet50", output_stride=16, stride_mode="dilation", weights="none").eval()
    b.load_state_dict(a.state_dict())
    for m in a.stage4.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.dilation == (1, 1)
    assert a.stage4[0].conv2.stride == (1, 1) and a.stage4[0].downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape == (1, 2048, 4, 4)
    assert not torch.allclose(ya, yb, atol=1e-4)


def test_dilation_mode_equals_torchvision_replace_stride_with_dilation():
    torch.manual_seed(0)
    ours = ResNetBackbone("resnet50", output_stride=8, stride_mode="dilation", frozen_bn=True, weights="none").eval()
    tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    mapping = {}
    for k in sd:
        head = k.split(".")[0]
        if head in ("conv1", "bn1"):
            mapping[k] = "stage1." + {"conv1": "0", "bn1": "1"}[head] + k[len(head):]
        elif head == "layer1":
            mapping[k] = "stage1.4" + k[len("layer1"):]
        else:
            mapping[k] = {"layer2": "stage2", "layer3": "stage3", "layer4": "stage4"}[head] + k[len(head):]
    ours.load_state_dict({mapping[k]: v for k, v in sd.items()})
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        assert torch.allclose(ours(x), ref, atol=1e-5)


def test_frozen_bn_stays_in_eval_and_stem_frozen():
    bb = ResNetBackbone("resnet18", frozen_bn=True, freeze_stem=True, weights="none")
    bb.train()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    bb(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    assert not any(p.requires_grad for p in bb.stage1[0].parameters())  # conv1
    assert not any(p.requires_grad for p in bb.stage1[1].parameters())  # bn1
    assert all(p.requires_grad for p in bb.stage4.parameters())  # affine params still train
    free = ResNetBackbone("resnet18", frozen_bn=False, weights="none").train()
    assert all(m.training for m in free.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_local_state_dict_loads(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(tv.layer3[0].conv1.weight, 0.5)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv.state_dict().items()}}, path)
    bb = ResNetBackbone("resnet18", weights=str(path))
    assert torch.all(bb.stage3[0].conv1.weight == 0.5)


def test_mismatched_state_dict_lists_tensors(tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(tv.state_dict(), path)
    with pytest.raises(WeightsError, match=r"r50.pth: does not fit .*shape mismatch: layer1.0.conv1.weight"):
        ResNetBackbone("resnet18", weights=str(path))
    with pytest.raises(WeightsError, match=r"x: does not fit .*missing: a.bias, a.weight"):
        load_state_dict_checked(torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2)}), {}, "x")


class PickledThing:
    """Any non-tensor object makes a checkpoint need pickle."""


def test_pickled_weights_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": PickledThing()}, path)
    with pytest.raises(WeightsError, match=r"evil.pth: refused or unreadable weights file"):
        ResNetBackbone("resnet18", weights=str(path))


def test_offline_torchvision_weights_error_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"resnet50 weights IMAGENET1K_V1 are not in the torch hub cache .* put it at .*hub/checkpoints/resnet50-"):
        ResNetBackbone("resnet50", weights="IMAGENET1K_V1")
    with pytest.raises(WeightsError, match=r"neither a file nor a torchvision weights name"):
        ResNetBackbone("resnet50", weights="IMAGENET_BOGUS")


def test_cached_torchvision_weights_load(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from wsss.models.backbones import torchvision_weights_path

    _, cached = torchvision_weights_path("resnet18", "IMAGENET1K_V1")
    cached.parent.mkdir(parents=True)
    tv = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(tv.conv1.weight, 0.25)
    torch.save(tv.state_dict(), cached)
    bb = ResNetBackbone("resnet18", weights="IMAGENET1K_V1")
    assert torch.all(bb.stage1[0].weight == 0.25)
