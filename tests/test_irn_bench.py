"""tools/irn_bench.py: the controls' mask folders and the region shares, by definition."""
import numpy as np

from tools.irn_bench import derangement, gt_other_masks, regions, shuffled_masks
from wsss.data.voc import VOCLayout
from wsss.fileio import read_mask


def test_control_mask_folders(tiny_root, tmp_path):
    voc = VOCLayout(tiny_root)
    ids = voc.read_split("train_aug")
    scored = set(voc.read_split("train"))
    gt = tiny_root / "SegmentationClassAug"
    for n, seed in [(2, 0), (7, 1), (50, 2)]:
        p = derangement(n, np.random.default_rng(seed))
        assert sorted(p.tolist()) == list(range(n)) and (p != np.arange(n)).all()
    # shuffled: each image gets the mask of the image the derangement names
    sh = shuffled_masks(voc, ids, gt, tmp_path / "sh", seed=3)
    p = derangement(len(ids), np.random.default_rng(3))
    for k, i in enumerate(ids):
        assert (sh / f"{i}.png").read_bytes() == (gt / f"{ids[p[k]]}.png").read_bytes()
    # ground truth of other images: the scored images carry no relation (all 255)
    go = gt_other_masks(voc, ids, scored, tmp_path / "go")
    for i in ids:
        m = read_mask(go / f"{i}.png", 255)
        if i in scored:
            assert (m == 255).all()
        else:
            assert np.array_equal(m, read_mask(gt / f"{i}.png", 255))


def test_regions_by_hand(tiny_root, tmp_path):
    """The ground truth itself covers every part and body pixel and no background; all
    background covers nothing and has no false positive."""
    from wsss.fileio import write_palette_png

    voc = VOCLayout(tiny_root)
    ids = voc.read_split("train")
    r = regions(voc, ids, tiny_root / "SegmentationClass", 3)
    assert r == {"part_covered": 1.0, "body_covered": 1.0, "background_fp": 0.0}
    for i in ids:
        h, w = read_mask(voc.mask(i, "SegmentationClass"), 255).shape
        write_palette_png(tmp_path / f"{i}.png", np.zeros((h, w), np.uint8))
    assert regions(voc, ids, tmp_path, 3) == {"part_covered": 0.0, "body_covered": 0.0, "background_fp": 0.0}
