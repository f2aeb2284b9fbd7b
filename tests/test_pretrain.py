"""The in-project pretrained start: corpus, pretraining, the weights file and its sidecar."""
import json

import pytest
import torch

from wsss.fileio import DataError


def _cfg(tiny_cfg, tmp_path, **extra):
    return tiny_cfg("cam/cam_r18_synthetic.yaml", **{
        "pretrain.enabled": True, "pretrain.corpus_root": str(tmp_path / "corpus"), "pretrain.num_train": 48,
        "pretrain.num_val": 12, "pretrain.image_size": 32, "pretrain.num_classes": 6, "pretrain.epochs": 1,
        "pretrain.batch_size": 8, "model.weights": str(tmp_path / "pre" / "r18.pth"), **extra})


def test_pretraining_makes_a_checked_local_weights_file(tiny_cfg, tmp_path):
    from wsss.cam.training import build_cam_model
    from wsss.pretrain import ensure_pretrained, file_sha256

    cfg = _cfg(tiny_cfg, tmp_path)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    ensure_pretrained(cfg)
    # the run that made the weights goes on from the random state it had: its numbers do not
    # depend on whether it or an earlier run made them
    assert torch.equal(torch.get_rng_state(), before)
    weights = tmp_path / "pre" / "r18.pth"
    meta = json.loads((tmp_path / "pre" / "r18.pth.json").read_text())
    assert meta["sha256"] == file_sha256(weights)
    assert meta["recipe"]["num_train"] == 48 and meta["recipe"]["backbone"] == "resnet18"
    assert 0.0 <= meta["val_top1"] <= 1.0
    # a torchvision-named backbone state dict, nothing of the pretraining head
    sd = torch.load(weights, weights_only=True)
    assert "conv1.weight" in sd and "layer4.1.bn2.running_var" in sd and not any(k.startswith(("fc.", "classifier")) for k in sd)
    # the corpus is the project's own: its own classes, not the synthetic mini-VOC's
    labels = json.loads((tmp_path / "corpus" / "cls_labels.json").read_text())
    assert labels["classes"][0] == "dots_hue0" and len(labels["labels"]) == 60
    # the CAM network loads it through model.weights, exactly as a user's local file
    model = build_cam_model(cfg)
    assert torch.equal(model.backbone.stage1[0].weight, sd["conv1.weight"])
    assert torch.equal(model.backbone.stage4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    # a second call finds the file and keeps it
    mtime = weights.stat().st_mtime_ns
    ensure_pretrained(cfg)
    assert weights.stat().st_mtime_ns == mtime
    # another recipe is refused, naming the key; a changed file too
    with pytest.raises(DataError, match=r"r18\.pth: pretrained with another recipe \(pretrain\.epochs\)"):
        ensure_pretrained(_cfg(tiny_cfg, tmp_path, **{"pretrain.epochs": 2}))
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"SHA-256 differs"):
        ensure_pretrained(cfg)
