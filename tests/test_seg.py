import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from wsss.models.deeplab import ASPPSum, DeepLabV2, DeepLabV3, seg_param_groups, segmentation_loss
from wsss.seg.evaluate import multiscale_probs


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_deeplabv2_shapes_and_stride(arch):
    net = DeepLabV2(6, arch, weights="none").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 80))
    assert out.shape == (1, 6, 8, 10)  # output stride 8
    dil = [m.dilation for m in net.backbone.stage4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert set(dil) == {(4, 4)}  # every block of layer4 at rate 4, as DeepLab v2
    assert all(not p.requires_grad for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())


def test_deeplabv3_from_torchvision():
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    net = DeepLabV3(4, "resnet50", weights="none").eval()
    assert isinstance(net.net.classifier, DeepLabHead)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 65, 65)).shape == (1, 4, 65, 65)


def test_aspp_is_the_sum_of_four_branches():
    aspp = ASPPSum(8, 3)
    x = torch.randn(1, 8, 20, 20)
    assert [c.dilation for c in aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), sum(c(x) for c in aspp.branches))


def test_head_lr_multipliers_reach_the_optimizer():
    from wsss.engine.optim import build_sgd

    net = DeepLabV2(3, "resnet18", weights="none")
    opt = build_sgd(seg_param_groups(net, 10.0, 20.0), lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(2.5e-4)
    assert by_name["head_weight"]["lr"] == pytest.approx(2.5e-3) and by_name["head_weight"]["weight_decay"] == 5e-4
    assert by_name["head_bias"]["lr"] == pytest.approx(5e-3) and by_name["head_bias"]["weight_decay"] == 0.0
    assert {id(p) for p in by_name["head_bias"]["params"]} == {id(c.bias) for c in net.aspp.branches}
    assert by_name["backbone"]["momentum"] == 0.9


def test_loss_ignores_255_and_all_ignored_batch_is_zero():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 8, 8), 255, dtype=torch.long)
    loss = segmentation_loss(logits, target)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    target[0, :4, :4] = 1
    up = torch.nn.functional.interpolate(logits.detach(), size=(8, 8), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.cross_entropy(up[:1, :, :4, :4], target[:1, :4, :4])
    assert segmentation_loss(logits.detach(), target).item() == pytest.approx(expected.item(), rel=1e-5)


class KnownModel(nn.Module):
    """Logits = a fixed 1x1 conv of the input, at stride 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x):
        return self.conv(x[:, :, ::2, ::2])


def test_multiscale_flip_equals_hand_computed_average():
    model = KnownModel().eval()
    img = torch.randn(1, 3, 20, 30)
    scales = [0.5, 1.0, 1.5]
    inputs = [torch.nn.functional.interpolate(img, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else img
              for s in scales]
    got = multiscale_probs(model, inputs, (20, 30), flip=True)
    expected = torch.zeros(1, 4, 20, 30)
    with torch.no_grad():
        for x in inputs:
            for flip in (False, True):
                xi = x.flip(-1) if flip else x
                p = torch.softmax(torch.nn.functional.interpolate(model(xi), size=(20, 30), mode="bilinear", align_corners=False), 1)
                expected += p.flip(-1) if flip else p
    torch.testing.assert_close(got, expected / 6)


@pytest.mark.slow
def test_train_seg_then_eval_seg_with_test_export(tiny_cfg, tiny_root, tmp_path):
    from conftest import CONFIGS, run_script_here, tiny_overrides

    work = tmp_path / "work"
    args = ["--config", str(CONFIGS / "seg/deeplabv2_r18_synthetic.yaml"),
            *tiny_overrides(tiny_root, work, **{"seg.mask_dir": "SegmentationClassAug", "seg.weights": "none",
                                                "seg.iterations": 6, "seg.batch_size": 2, "seg.workers": 0,
                                                "seg.aug.crop_size": 48, "seg.scales": [0.5, 1.0], "seg.ckpt_interval": 3,
                                                "seg.val_interval": 3, "seg.log_interval": 2, "seg.test_split": "test"})]
    out = run_script_here("train_seg.py", *args, check=True)
    assert (work / "seg" / "checkpoints" / "final.pth").is_file()
    assert "[deeplab] step 3: miou=" in out.stdout  # periodic val mIoU
    out = run_script_here("eval_seg.py", *args, check=True)
    res = json.loads((work / "metrics" / "seg_eval.json").read_text())
    assert res["num_images"] == 8 and 0 <= res["miou"] <= 1
    assert f"segmentation mIoU on val: {res['miou'] * 100:.2f}" in out.stdout
    assert len(list((work / "seg" / "val_pred").glob("*.png"))) == 8
    export = work / "seg" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    files = sorted(export.glob("*.png"))
    assert [f.stem for f in files] == (tiny_root / "ImageSets/Segmentation/test.txt").read_text().split()
    for f in files:
        arr = np.asarray(Image.open(f))
        assert arr.shape == (64, 64) and arr.dtype == np.uint8 and arr.max() <= 3
