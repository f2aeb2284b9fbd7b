"""A pretrained start made here: the synthetic backbone pretrained on the project's own corpus.

VOC users start from ImageNet weights, and the VOC recipe depends on it: frozen BN
statistics, no momentum, a 10x head and detached stages 1-2 only work on a backbone that
already has features. No weights can be downloaded on an offline machine, so the synthetic
configs name a local weights file (``model.weights``, read exactly like a user's local
file) and a ``pretrain`` section. When the file is missing, the first training stage makes
it: it generates the classification corpus of :mod:`wsss.data.pretrain_corpus` (other
shapes, textures and classes than the synthetic mini-VOC, its own seed), trains the
backbone on it with trainable BN (about 3 minutes on 2 CPU cores), and writes

    <weights>            a torchvision-named state dict of the backbone (no fc)
    <weights>.json       its SHA-256, the recipe, the held-out top-1 accuracy, the time

A weights file whose recipe differs from the config's ``pretrain`` section is an error,
never silently used.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from wsss.config import to_dict
from wsss.fileio import file_sha256

# keys that cannot change the weights
_NOT_RECIPE = ("enabled", "corpus_root")


def recipe(cfg) -> dict:
    from wsss.data.pretrain_corpus import CORPUS_VERSION

    r = {k: v for k, v in to_dict(cfg.pretrain).items() if k not in _NOT_RECIPE}
    return {"backbone": cfg.model.backbone, "corpus_version": CORPUS_VERSION, **r}


def sidecar(weights: str | Path) -> Path:
    return Path(f"{weights}.json")


def check_pretrained(cfg) -> bool:
    """True when model.weights exists and was made by this recipe; an error when it was made
    by another; False when it is missing."""
    from wsss.fileio import DataError, read_json

    weights = Path(cfg.model.weights)
    if not weights.is_file():
        return False
    meta_path = sidecar(weights)
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing; {weights} cannot be checked against pretrain.* (delete {weights} to remake it)")
    meta = read_json(meta_path)
    want = recipe(cfg)
    if meta.get("recipe") != want:
        changed = sorted(k for k in set(want) | set(meta.get("recipe", {})) if want.get(k) != meta.get("recipe", {}).get(k))
        raise DataError(f"{weights}: pretrained with another recipe ({', '.join(f'pretrain.{k}' for k in changed)}); "
                        "delete it to remake it, or point model.weights at another file")
    if meta.get("sha256") != file_sha256(weights):
        raise DataError(f"{weights}: its SHA-256 differs from {meta_path} (a changed or truncated file); delete it to remake it")
    return True


def ensure_pretrained(cfg, device=None) -> None:
    """Make model.weights by pretraining when ``pretrain.enabled`` and the file is missing.
    Under torchrun rank 0 trains; the others wait."""
    if not cfg.pretrain.enabled or check_pretrained(cfg):
        return
    from wsss.engine.distributed import barrier, get_rank

    if get_rank() == 0:
        import torch

        # the pretraining draws from torch's global generator: the run that made the weights
        # must go on from the same random state as a run that found them made (its CAM head's
        # initialisation, its shuffles), or its numbers would depend on which run came first
        gpu = [device.index or 0] if device is not None and device.type == "cuda" else []
        with torch.random.fork_rng(devices=gpu):
            pretrain_backbone(cfg, device)
    barrier()
    check_pretrained(cfg)


def _load_split(root: Path, split: str, num_classes: int, mean, std):
    """The whole split in memory, normalised as every stage normalises (the corpus is small)."""
    import numpy as np
    import torch

    from wsss.data.labels import ImageLabels
    from wsss.data.transforms import normalize
    from wsss.data.voc import VOCLayout
    from wsss.fileio import read_image

    layout = VOCLayout(root)
    labels = ImageLabels.load(root / "cls_labels.json", num_classes)
    ids = layout.read_split(split)
    x = np.stack([normalize(read_image(layout.image(i)), mean, std) for i in ids])
    y = [labels.indices(i)[0] for i in ids]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(y)


def pretrain_backbone(cfg, device=None) -> dict:
    """Generate the corpus (once), train a plain ResNet on it (output stride 32, trainable
    BN, nothing frozen) with AdamW and a one-cycle schedule on in-memory tensors, save the
    backbone under torchvision's names with its SHA-256 and recipe."""
    import torch
    import torch.nn.functional as F

    from wsss.data.pretrain_corpus import CORPUS_VERSION, generate_pretrain_corpus
    from wsss.fileio import atomic_path, atomic_write_json
    from wsss.models.backbones import ResNetBackbone, to_torchvision_names
    from wsss.models.cam_net import CAMNet

    p = cfg.pretrain
    weights = Path(cfg.model.weights)
    device = device or torch.device("cpu")
    t0 = time.perf_counter()
    corpus = Path(p.corpus_root)
    corpus_meta = {"seed": p.seed, "image_size": p.image_size, "num_train": p.num_train, "num_val": p.num_val,
                   "num_classes": p.num_classes}
    meta_file = corpus / "corpus.json"
    if not meta_file.is_file() or json.loads(meta_file.read_text()) != {**corpus_meta, "version": CORPUS_VERSION}:
        print(f"generating the pretraining corpus in {corpus} ...", flush=True)
        generate_pretrain_corpus(corpus, **corpus_meta)
        atomic_write_json(meta_file, {**corpus_meta, "version": CORPUS_VERSION})
    print(f"pretraining {cfg.model.backbone} on {corpus} ({p.num_train} images, {p.epochs} epochs) -> {weights}", flush=True)
    aug = cfg.train.aug
    x, y = _load_split(corpus, "train", p.num_classes, aug.mean, aug.std)
    xv, yv = _load_split(corpus, "val", p.num_classes, aug.mean, aug.std)
    gen = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    model = CAMNet(ResNetBackbone(cfg.model.backbone, output_stride=32, frozen_bn=False, freeze_stem=False, weights="none"),
                   p.num_classes, detach_stage=0).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    per_epoch = max(len(x) // p.batch_size, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=p.epochs * per_epoch, pct_start=0.15)
    for epoch in range(p.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(per_epoch):
            idx = order[i * p.batch_size:(i + 1) * p.batch_size]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb).to(device)
            loss = F.cross_entropy(model(xb)["logits"].float(), y[idx].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining: non-finite loss at epoch {epoch + 1}, step {i + 1} (lower pretrain.lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        top1 = _top1(model, xv, yv, device)
        print(f"[pretrain] epoch {epoch + 1}/{p.epochs}: loss {loss.item():.3f}, held-out top-1 {100 * top1:.1f}% "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    state = to_torchvision_names({k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()})
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        torch.save(state, tmp)
    meta = {"sha256": file_sha256(weights), "recipe": recipe(cfg), "val_top1": top1,
            "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
            "made_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(sidecar(weights), meta)
    print(f"pretrained weights: {weights} (held-out top-1 {100 * top1:.1f}%, {meta['seconds']:.0f} s)", flush=True)
    return meta


def _top1(model, x, y, device) -> float:
    import torch

    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), 100):
            right += int((model(x[i:i + 100].to(device))["logits"].argmax(1).cpu() == y[i:i + 100]).sum())
    model.train()
    return right / max(len(x), 1)
