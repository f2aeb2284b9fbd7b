"""tools/reference_code.py (the official GSLM code as a benchmark side): the checkout is checked
before any compute, and our weights reach the code under its names. The side-by-side run itself
needs a checkout of the code, which CI does not have (docs/performance.md publishes one)."""
from __future__ import annotations

import pytest
import torch


def test_a_folder_that_is_no_gslm_checkout_is_refused_in_one_line(tmp_path):
    from tools.reference_code import check_checkout

    (tmp_path / "step").mkdir()
    (tmp_path / "step" / "make_cam.py").write_text("")
    with pytest.raises(ValueError, match=r"not a checkout of github.com/Wheat2018/GSLM \(no step/train_cam.py") as e:
        check_checkout(tmp_path)
    assert "\n" not in str(e.value)


def test_our_resnet50_weights_load_into_torchvision_and_the_codes_layout(tiny_cfg):
    """to_torchvision_names gives the state dict torchvision's ResNet-50 loads strictly (what the
    code's model_zoo call returns); to_code_names gives the code's Net layout: stage1 as
    conv1/bn1/relu/maxpool/layer1 at 0..4, each later stage wrapped in a Sequential (.0.)."""
    import torchvision

    from tools.reference_code import to_code_names, to_torchvision_names
    from wsss.cam.training import build_cam_model

    cfg = tiny_cfg(**{"model.backbone": "resnet50"})
    torch.manual_seed(0)
    sd = build_cam_model(cfg, pretrained=False).state_dict()
    tv = torchvision.models.resnet50(weights=None)
    tv.load_state_dict(to_torchvision_names(sd), strict=True)
    assert torch.equal(tv.layer3[2].conv2.weight, sd["backbone.stage3.2.conv2.weight"])
    assert torch.equal(tv.conv1.weight, sd["backbone.stage1.0.weight"])
    code = to_code_names(sd)
    assert len(code) == len(sd)
    assert torch.equal(code["stage4.0.1.bn3.weight"], sd["backbone.stage4.1.bn3.weight"])
    assert torch.equal(code["stage1.4.0.conv1.weight"], tv.layer1[0].conv1.weight)
    assert torch.equal(code["classifier.weight"], sd["classifier.weight"])
