"""PPL as the figures draw it, on inputs of any size: BN statistics from the full path only,
trainable blocks after every split, an exact merge, a flip-consistent partition."""
import copy

import pytest
import torch
import torch.nn as nn

from ppl_wsss.model import PPLNet
from ppl_wsss.patch import merge_patches, split_patches
from wsss.models.backbones import ResNetBackbone

from conftest import CONFIGS


def _net(explicit=False, splits=(1, 2, 3), grids=(2, 2, 2), frozen_bn=True, detach_stage=0):
    torch.manual_seed(0)
    bb = ResNetBackbone("resnet18", output_stride=16, frozen_bn=frozen_bn, freeze_stem=False, weights="none")
    return PPLNet(bb, 4, detach_stage, list(splits), list(grids), explicit=explicit)


# ---------------------------------------------------------------------------
# BN statistics come from the full path
# ---------------------------------------------------------------------------
def _bn_buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches_tracked" in k}


@pytest.mark.parametrize("explicit,splits", [(False, (1,)), (False, (2,)), (False, (3,)), (True, (1, 2, 3))])
def test_patch_branches_never_write_bn_statistics(explicit, splits):
    """Trainable BN in training mode: after a PPL step the running statistics are exactly the
    ones the full path alone writes."""
    net = _net(explicit=explicit, splits=splits, grids=(2,) * len(splits), frozen_bn=False).train()
    full_only = copy.deepcopy(net)
    before = _bn_buffers(net)
    x = torch.randn(2, 3, 64, 64)
    net(x)["logits"].sum().backward()
    with torch.no_grad():
        full_only.stem_features(x, 4)
    after, expected = _bn_buffers(net), _bn_buffers(full_only)
    assert any(not torch.equal(after[k], before[k]) for k in after)  # the full path did write them
    for k in after:
        assert torch.equal(after[k], expected[k]), k


@pytest.mark.parametrize("split", [1, 2, 3])
def test_patch_independence_in_training_mode_with_trainable_bn(split):
    """In training mode with trainable BN, one patch's input still changes no other patch's
    output: the branches normalise each patch with the full path's (running) statistics."""
    net = _net(splits=(split,), grids=(2,), frozen_bn=False).train()
    with torch.no_grad():
        feat = net.stem_features(torch.randn(2, 3, 128, 128), split)
        base = net.patch_path(feat, split, 2, (8, 8))
        h, w = feat.shape[-2:]
        f2 = feat.clone()
        f2[:, :, :h // 2, :w // 2] += torch.randn_like(f2[:, :, :h // 2, :w // 2]) * 5
        out = net.patch_path(f2, split, 2, (8, 8))
    n = base.shape[-1] // 2  # 4x4 merged outputs per patch, no shared cells at this size
    assert not torch.allclose(out[:, :, :n, :n], base[:, :, :n, :n])
    assert torch.equal(out[:, :, n:, :], base[:, :, n:, :]) and torch.equal(out[:, :, :n, n:], base[:, :, :n, n:])


# ---------------------------------------------------------------------------
# Which blocks each progressive stage trains
# ---------------------------------------------------------------------------
def _trained_stages(phase, model):
    """1-based stages with a parameter in the optimizer the phase builds after its setup."""
    if phase.setup:
        phase.setup(model, None)
    ids = {id(p) for g in phase.param_groups(model) for p in g["params"]}
    return [i + 1 for i, st in enumerate(model.backbone.stages) if any(id(p) in ids for p in st.parameters())]


@pytest.mark.parametrize("config,expected", [
    ("ppl_progressive_r50_voc12.yaml", [[2, 3, 4], [3, 4], [3, 4]]),
    ("ppl_progressive_r50_coco14.yaml", [[2, 3, 4], [3, 4], [3, 4]]),
    ("ppl_explicit_r50_voc12.yaml", [[2, 3, 4]]),
    ("ppl_progressive_r50_voc12_detach2.yaml", [[3, 4], [3, 4], [3, 4]]),  # the baseline's freezing
    ("ppl_explicit_r50_voc12_detach2.yaml", [[3, 4]]),
    ("ppl_single_split1_r50_voc12.yaml", [[2, 3, 4]]),
])
def test_ppl_configs_train_every_block_after_the_split(config, expected):
    from wsss.cam.training import build_cam_model, cam_phases
    from wsss.config import load_config

    cfg = load_config(CONFIGS / "ppl" / config)
    model = build_cam_model(cfg, pretrained=False)
    phases = [p for p in cam_phases(cfg) if p.name.startswith(("stage", "cam"))]
    assert [_trained_stages(p, model) for p in phases] == expected


def test_split1_stage_trains_layer2_through_the_patch_path():
    """VOC progressive, stage 1 (cut after stage 1): the patch path alone trains layer2."""
    from wsss.cam.training import build_cam_model, cam_phases
    from wsss.config import load_config

    cfg = load_config(CONFIGS / "ppl" / "ppl_progressive_r50_voc12.yaml", ["model.backbone=resnet18"])
    model = build_cam_model(cfg, pretrained=False).train()
    cam_phases(cfg)[0].setup(model, None)
    x = torch.randn(2, 3, 64, 64)
    merged, full = model.features(x)
    merged[0].square().mean().backward()  # the patch path alone
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.backbone.stage2.parameters())
    assert all(p.grad is None for p in model.backbone.stage1.parameters())


# ---------------------------------------------------------------------------
# Merge: exact at any size, cell for cell on the full path's grid
# ---------------------------------------------------------------------------
def _centre_taps(net):
    """Zero every 3x3 kernel but its centre: output cell J then depends on split cell r*J
    alone, so any shift or resize of the merged map shows up as a wrong value."""
    with torch.no_grad():
        for m in net.backbone.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                keep = torch.zeros_like(m.weight)
                keep[..., 1, 1] = 1
                m.weight.mul_(keep)
    return net


ODD_SIZES = [(5, 7), (9, 13), (11, 11), (15, 17), (19, 23), (21, 27), (31, 33), (35, 29)]


# split-map sizes per cut point: every remainder t of the size by the stride r and both
# parities of the cell count n (so abutting, gapped and sharing layouts); fewer and smaller
# where the stages after the cut cost more per cell
ALIGN_SIZES = {1: ODD_SIZES + [(12, 10), (16, 14)], 2: ODD_SIZES[:5] + [(12, 10)], 3: ODD_SIZES[:4] + [(12, 10)]}


@pytest.mark.parametrize("split", [1, 2, 3])
def test_patch_path_aligns_cell_for_cell_with_the_full_path(split):
    """Every grid, many odd split-map sizes: the merged map is the full path's map, cell for cell."""
    net = _centre_taps(_net(splits=(split,), grids=(2,))).eval()
    c = net.backbone.stage_channels[split - 1]
    torch.manual_seed(1)
    with torch.no_grad():
        for h, w in ALIGN_SIZES[split]:
            feat = torch.randn(1, c, h, w)
            full = net.run_stages(feat, split)
            for grid in (1, 2, 3, 4):
                merged = net.patch_path(feat, split, grid, tuple(full.shape[-2:]))
                torch.testing.assert_close(merged, full, atol=1e-4, rtol=1e-4, msg=f"{h}x{w} grid {grid}")


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_merge_needs_no_resize_at_any_size(stride):
    """A block with the strided layers' geometry (output J at input r*J): merge(block(P(x)))
    == block(x) exactly, for every size up to 40 and every grid."""
    block = nn.AvgPool2d(1, stride)
    for grid in (1, 2, 3, 4):
        for h in range(1, 41):
            x = torch.randn(1, 2, h, h + 5)
            patches, info = split_patches(x, grid, stride=stride)
            assert info.out_size == tuple(block(x).shape[-2:])
            assert torch.equal(merge_patches(block(patches), info, info.out_size), block(x)), (h, grid)


def test_merge_refuses_to_resize():
    """Outputs of a stride P was not told about are an error, not a silent bilinear resize."""
    x = torch.randn(1, 2, 9, 9)
    patches, info = split_patches(x, 2)  # laid out for stride 1
    with pytest.raises(ValueError, match="stride"):
        merge_patches(nn.AvgPool2d(1, 2)(patches), info, (5, 5))


# ---------------------------------------------------------------------------
# Flip-consistent partition
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [1, 2, 3, 4])
def test_flipped_map_is_patched_into_the_flipped_cells(grid):
    """Odd sizes, every grid, every stride: patch (i, j) of a horizontally flipped map holds
    exactly the flipped cells of patch (i, g-1-j) of the map (vertically: (g-1-i, j))."""
    g = grid
    for stride in (1, 2, 4):  # stride 1 first: that call is what the old P offered
        kw = {} if stride == 1 else {"stride": stride}
        for h, w in ODD_SIZES + [(1, 3), (3, 5)]:
            x = torch.randn(2, 3, h, w)
            for mode in ("replicate", "zeros"):
                p, _ = split_patches(x, g, mode, **kw)
                ph, pw = p.shape[-2:]
                grid_of = lambda t: t.reshape(g, g, 2, 3, ph, pw)  # noqa: E731
                hflip, _ = split_patches(x.flip(-1), g, mode, **kw)
                vflip, _ = split_patches(x.flip(-2), g, mode, **kw)
                assert torch.equal(grid_of(hflip), grid_of(p).flip(1).flip(-1)), (h, w, stride, mode)
                assert torch.equal(grid_of(vflip), grid_of(p).flip(0).flip(-2)), (h, w, stride, mode)


def _mirror_symmetric_kernels(net):
    """Average every kernel with its flips: the convolutions then commute with flips, so the
    only thing that can make the network's map depend on the flip is where the cells fall."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)
    return net


@pytest.mark.parametrize("explicit,splits", [(False, (1,)), (False, (2,)), (False, (3,)), (True, (1, 2, 3))])
def test_flip_tta_sees_one_partition(explicit, splits):
    """With mirror-symmetric kernels at image sides 16a+1 (every strided layer sees an odd size)
    the full path commutes with flips; the PPL CAM must too, for every grid: the flipped image
    is patched into the flipped patches, each cut like the whole map."""
    x = torch.randn(1, 3, 65, 49)
    for grid in (2, 3, 4):
        net = _mirror_symmetric_kernels(_net(explicit=explicit, splits=splits, grids=(grid,) * len(splits))).eval()
        with torch.no_grad():
            full = net.stem_features(x, 4)
            torch.testing.assert_close(net.stem_features(x.flip(-1), 4).flip(-1), full, atol=1e-5, rtol=1e-5)
            cam = net(x)["cam"]  # before the ReLU: nothing clipped away
            torch.testing.assert_close(net(x.flip(-1))["cam"].flip(-1), cam, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(net(x.flip(-2))["cam"].flip(-2), cam, atol=1e-5, rtol=1e-5)
