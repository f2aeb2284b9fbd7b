import numpy as np
import pytest
import torch

from ppl_wsss.model import PPLNet
from ppl_wsss.patch import merge_patches, split_patches
from wsss.models.backbones import ResNetBackbone


@pytest.mark.parametrize("shape,grid", [((2, 3, 8, 12), 2), ((1, 4, 9, 7), 2), ((2, 2, 10, 11), 3), ((1, 1, 5, 5), 1)])
@pytest.mark.parametrize("pad_mode", ["zeros", "replicate", "reflect"])
def test_merge_inverts_split(shape, grid, pad_mode):
    x = torch.randn(*shape)
    patches, info = split_patches(x, grid, pad_mode)
    b, c, h, w = shape
    # no strided blocks in between (stride 1): every patch is as long as the cells it yields
    assert patches.shape == (grid * grid * b, c, info.rows.per_patch, info.cols.per_patch)
    assert info.rows.per_patch >= -(-h // grid) and info.cols.per_patch >= -(-w // grid)
    assert torch.equal(merge_patches(patches, info), x)


def test_patches_are_the_grid_cells_in_order():
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    patches, _ = split_patches(x, 2)
    # patch-major: (row 0, col 0) for every image, then (row 0, col 1), ...
    assert torch.equal(patches[0], x[0, :, :2, :3])
    assert torch.equal(patches[1], x[1, :, :2, :3])
    assert torch.equal(patches[2], x[0, :, :2, 3:])
    assert torch.equal(patches[7], x[1, :, 2:, 3:])


def test_padding_modes():
    x = torch.ones(1, 1, 6, 6)  # 4 patches of 2 cells need 8: one padded cell on each side
    p, info = split_patches(x, 4, "zeros")
    assert info.rows.pad == info.cols.pad == 1 and p.shape == (16, 1, 2, 2)
    assert p[0, 0, 0, 0] == 0 and p[15, 0, 1, 1] == 0  # the padded top-left and bottom-right corners
    assert p[0, 0, 1, 1] == 1
    p, _ = split_patches(x, 4, "replicate")
    assert torch.all(p == 1)


def test_block_on_split_patches_equals_per_patch_by_hand():
    torch.manual_seed(0)
    block = ResNetBackbone("resnet18", weights="none").stage3.eval()  # a strided block (stride 2)
    x = torch.randn(2, 128, 12, 10)
    with torch.no_grad():
        patches, info = split_patches(x, 2, stride=2)
        merged = merge_patches(block(patches), info)
        assert merged.shape == block(x).shape == (2, 256, 6, 5)  # the full path's size
        # rows: 12 cells -> 6 outputs, two patches [0, 6), [6, 12) of 3 outputs each;
        # columns: 10 cells -> 5 outputs (odd): patches [0, 6), [4, 10) share output 2
        rows, cols = [(0, 6), (6, 12)], [(0, 6), (4, 10)]
        by_hand = [[block(x[:, :, r0:r1, c0:c1]) for c0, c1 in cols] for r0, r1 in rows]
        for i in range(2):
            torch.testing.assert_close(merged[:, :, 3 * i:3 * i + 3, :2], by_hand[i][0][..., :2], atol=1e-5, rtol=0)
            torch.testing.assert_close(merged[:, :, 3 * i:3 * i + 3, 3:], by_hand[i][1][..., 1:], atol=1e-5, rtol=0)
            shared = (by_hand[i][0][..., 2] + by_hand[i][1][..., 0]) / 2
            torch.testing.assert_close(merged[:, :, 3 * i:3 * i + 3, 2], shared, atol=1e-5, rtol=0)


def _net(arch="resnet18", explicit=False, splits=(1, 2, 3), grids=(2, 2, 2), frozen_bn=True, detach_stage=0, cam_source="concat"):
    torch.manual_seed(0)
    bb = ResNetBackbone(arch, output_stride=16, frozen_bn=frozen_bn, freeze_stem=False, weights="none")
    return PPLNet(bb, 4, detach_stage, list(splits), list(grids), explicit=explicit, cam_source=cam_source)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_shapes_every_depth(arch):
    for explicit in (False, True):
        net = _net(arch, explicit=explicit).eval()
        with torch.no_grad():
            out = net(torch.randn(1, 3, 64, 64))
        c = net.backbone.out_channels
        assert net.classifier.in_channels == (4 if explicit else 2) * c
        assert out["logits"].shape == (1, 4) and out["cam"].shape == (1, 4, 4, 4)


@pytest.mark.parametrize("size", [(64, 64), (70, 90), (33, 47)])
def test_any_input_size(size):
    for explicit in (False, True):
        net = _net(explicit=explicit).eval()
        with torch.no_grad():
            cam = net.forward_cam(torch.randn(2, 3, *size))
        assert cam.shape[:2] == (2, 4) and (cam >= 0).all()


@pytest.mark.parametrize("split", [1, 2, 3])
def test_patch_independence(split):
    """With frozen BN, one patch's input changes nothing in the other patches' patch-path features."""
    net = _net(splits=(split,), grids=(2,)).eval()
    x = torch.randn(1, 3, 256, 256)  # patches of 128 px: wider than the stages' receptive field reach
    n = 8  # the merged 16x16 map is four 8x8 patch outputs
    with torch.no_grad():
        feat = net.stem_features(x, split)
        base = net.patch_path(feat, split, 2, (16, 16))
        # 1) perturb the top-left patch of the split-point feature map
        f2 = feat.clone()
        h, w = feat.shape[-2:]
        f2[:, :, : h // 2, : w // 2] += torch.randn_like(f2[:, :, : h // 2, : w // 2]) * 5
        out = net.patch_path(f2, split, 2, (16, 16))
        assert not torch.allclose(out[:, :, :n, :n], base[:, :, :n, :n])
        assert torch.equal(out[:, :, n:, :], base[:, :, n:, :]) and torch.equal(out[:, :, :n, n:], base[:, :, :n, n:])
        # 2) perturb image pixels deep inside the top-left patch region (farther from its
        #    border than the receptive field of the stages before the split reaches)
        x2 = x.clone()
        x2[:, :, 4:12, 4:12] += 3.0
        merged, full = net.features(x2)
        merged0, full0 = net.features(x)
        assert torch.equal(merged[0][:, :, n:, :], merged0[0][:, :, n:, :])
        assert torch.equal(merged[0][:, :, :n, n:], merged0[0][:, :, :n, n:])
        assert not torch.equal(merged[0][:, :, :n, :n], merged0[0][:, :, :n, :n])
        # the full path, by contrast, carries the change across the patch borders
        assert not torch.equal(full[:, :, n:, n:], full0[:, :, n:, n:])


def test_explicit_branches_put_no_gradient_below_their_split():
    net = _net(explicit=True, frozen_bn=True).train()
    x = torch.randn(2, 3, 64, 64)
    for b, k in enumerate(net.split_points):
        net.zero_grad(set_to_none=True)
        merged, full = net.features(x)
        merged[b].square().mean().backward()  # a loss on branch k's patch features alone
        stages = net.backbone.stages
        for i in range(4):
            grads = [p.grad for p in stages[i].parameters()]
            if i < k:  # stages 1..k
                assert all(g is None or torch.count_nonzero(g) == 0 for g in grads), (k, i)
            else:  # shared stages k+1..N learn from the patches
                assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads), (k, i)


def test_progressive_patch_path_trains_below_split():
    """Fig. 2 has no detach: in progressive PPL the patch path's gradient reaches stages <= k."""
    net = _net(splits=(2,), grids=(2,)).train()
    merged, _ = net.features(torch.randn(2, 3, 64, 64))
    merged[0].square().mean().backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.backbone.stage1.parameters())


def test_cam_source_full_uses_the_full_half():
    net = _net(splits=(2,), grids=(2,), cam_source="full").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        cam = net.forward_cam(x)
        full = net.stem_features(x, 4)
        w = net.classifier.weight[:, net.feat_channels:]
        expected = torch.relu(torch.nn.functional.conv2d(full, w))
    torch.testing.assert_close(cam, expected)
    with torch.no_grad():
        out = net(x)
        merged, full2 = net.features(x)
        concat = net.classifier(torch.cat([*merged, full2], 1))
    # the SR loss acts on the map inference uses; the logits still come from the concatenation
    torch.testing.assert_close(torch.relu(out["cam"]), expected)
    torch.testing.assert_close(out["logits"], concat.mean((2, 3)))
    assert not np.allclose(cam.numpy(), torch.relu(concat).numpy())


def test_progressive_phase_plan(tiny_cfg):
    from wsss.cam.training import build_cam_model, cam_phases

    cfg = tiny_cfg("ppl/ppl_progressive_r18_synthetic.yaml")
    phases = cam_phases(cfg)
    assert [p.name for p in phases] == ["stage1", "stage2", "stage3"]
    model = build_cam_model(cfg)
    assert model.split_points == [1, 2, 3] and model.active == 2  # inference: the last stage
    phases[0].setup(model, None)
    assert model.branches == [(1, 2)]
    cfg.ppl.restart_schedule = False
    spans = [p.schedule.poly_span for p in cam_phases(cfg)]
    assert spans[0][0] == 0 and spans[-1][1] == 1 and spans[0][1] == spans[1][0]


def test_bench_controls_grid_1_and_permuted_merge():
    """The synthetic bench's PPL controls (docs/synthetic_bench.md): with a 1 x 1 grid the patch
    path is the full path (in eval mode, bit for bit up to the order of the sums), so a gain of
    PPL over the baseline cannot come from patches there; with permuted merge positions every
    patch's output lands at the next patch's cells, so the merged map holds the same blocks in
    other places and nothing else changes."""
    net = _net(splits=(2,), grids=(1,)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        merged, full = net.features(x)
    torch.testing.assert_close(merged[0], full, atol=1e-5, rtol=1e-5)

    ident, perm = _net(splits=(1,), grids=(2,)).eval(), _net(splits=(1,), grids=(2,)).eval()
    perm.merge_positions = "permuted"
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        (a,), fa = ident.features(x)
        (b,), fb = perm.features(x)
    assert torch.equal(fa, fb)
    blocks = lambda m: [m[:, :, i:i + 4, j:j + 4] for i in (0, 4) for j in (0, 4)]  # noqa: E731  (the 2 x 2 grid's 4x4 cells)
    # patch order is row-major over the grid: patch i's output is at patch i+1's cells (cyclically)
    for i, blk in enumerate(blocks(a)):
        assert torch.equal(blocks(b)[(i + 1) % 4], blk)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="merge_positions must be identity or permuted"):
        PPLNet(ResNetBackbone("resnet18", weights="none"), 4, 0, [1], [2], explicit=False, merge_positions="shuffled")
