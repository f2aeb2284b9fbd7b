"""eval_seg: multi-scale + flip DeepLab inference, optional probability CRF, val mIoU,
coloured predictions and the test-set export in the VOC evaluation server's layout."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss.config import Config
from wsss.data.datasets import InferenceDataset, collate_single
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import load_checkpoint
from wsss.fileio import DataError, write_palette_png
from wsss.metrics import confusion_matrix, scores
from wsss.models.backbones import load_state_dict_checked
from wsss.models.deeplab import build_deeplab
from wsss.parallel import workers_for
from wsss.pseudo.crf import crf_probabilities
from wsss.reports import md_table, pct, per_class_rows, save_metrics

TEST_EXPORT = Path("results") / "VOC2012" / "Segmentation" / "comp6_test_cls"


@torch.no_grad()
def multiscale_probs(model: torch.nn.Module, inputs: list[torch.Tensor], out_size: tuple[int, int], flip: bool = True) -> torch.Tensor:
    """Mean of the softmax over scales (and flips), each upsampled (bilinear) to ``out_size``.

    ``inputs``: the image [B, 3, h_s, w_s] at each scale. Returns [B, C, H, W].
    """
    total, n = None, 0
    for x in inputs:
        b = x.shape[0]
        batch = torch.cat([x, x.flip(-1)], 0) if flip else x
        logits = model(batch).float()
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        probs = F.softmax(logits, dim=1)
        if flip:
            probs = probs[:b] + probs[b:].flip(-1)
            n += 2
        else:
            n += 1
        total = probs if total is None else total + probs
    return total / n


def load_seg_model(cfg: Config, device: torch.device) -> torch.nn.Module:
    model = build_deeplab(cfg.seg, cfg.data.num_classes + 1, pretrained=False)
    state = load_checkpoint(cfg.seg.checkpoint)
    load_state_dict_checked(model, state.get("model", state), cfg.seg.checkpoint)
    return model.to(device).eval()


def predict_split(cfg: Config, model: torch.nn.Module, device: torch.device, split: str, scales, flip: bool, crf: bool,
                  with_gt: bool, progress: bool = False):
    """Yield (id, image, prediction, gt or None) for every image of a split."""
    s = cfg.seg
    layout = VOCLayout(cfg.data.root)
    ids = layout.read_split(split)
    labels = None
    ds = InferenceDataset(cfg.data.root, ids, labels, scales=scales, mean=s.aug.mean, std=s.aug.std, resize_mode="bilinear",
                          split_name=split, gt_dir=cfg.data.gt_dir if with_gt else None, num_classes=cfg.data.num_classes)
    loader = DataLoader(ds, batch_size=1, num_workers=min(workers_for(s.workers, whole_node=True), 2), collate_fn=collate_single)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ds), desc=f"eval_seg {split}", dynamic_ncols=True)
    model.eval()
    for sample in loader:
        img = sample["image"]
        inputs = [x[None].to(device) for x in sample["inputs"]]
        probs = multiscale_probs(model, inputs, img.shape[:2], flip)[0].cpu().numpy()
        if crf:
            probs = crf_probabilities(img, probs, s.crf_params, device=device)
        pred = probs.argmax(0).astype(np.uint8)
        if bar is not None:
            bar.update(1)
        yield sample["id"], img, pred, sample.get("gt")
    if bar is not None:
        bar.close()


def evaluate_split(cfg: Config, model: torch.nn.Module, device: torch.device, split: str, scales, flip: bool, crf: bool,
                   save_dir: Path | None, progress: bool = False) -> dict:
    n = cfg.data.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for image_id, _img, pred, gt in predict_split(cfg, model, device, split, scales, flip, crf, with_gt=True, progress=progress):
        conf += confusion_matrix(gt, pred, n)
        if save_dir is not None:
            write_palette_png(save_dir / f"{image_id}.png", pred)
    names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
    return scores(conf, names)


def export_test(cfg: Config, model: torch.nn.Module, device: torch.device, progress: bool = False) -> Path:
    """Test-set PNGs (class indices 0..K as palette indices) where the VOC server expects them."""
    s = cfg.seg
    out = Path(s.out_dir) / TEST_EXPORT
    for image_id, _img, pred, _ in predict_split(cfg, model, device, s.test_split, s.scales, s.flip, s.crf, with_gt=False,
                                                 progress=progress):
        write_palette_png(out / f"{image_id}.png", pred)
    return out


def evaluate_seg(cfg: Config, device: torch.device) -> dict:
    s = cfg.seg
    model = load_seg_model(cfg, device)
    t0 = time.perf_counter()
    save_dir = Path(s.out_dir) / "val_pred" if s.save_predictions else None
    layout = VOCLayout(cfg.data.root)
    result: dict = {"split": s.val_split, "scales": list(s.scales), "flip": s.flip, "crf": s.crf}
    if s.val_split:
        ids = layout.read_split(s.val_split)
        missing = [i for i in ids if not layout.mask(i, cfg.data.gt_dir).is_file()]
        if missing:
            raise DataError(f"{layout.mask(missing[0], cfg.data.gt_dir)}: GT mask not found ({len(missing)} of {s.val_split})")
        r = evaluate_split(cfg, model, device, s.val_split, s.scales, s.flip, s.crf, save_dir, progress=cfg.runtime.progress)
        result.update({"num_images": len(ids), "miou": r["miou"], "per_class": r,
                       "predictions": str(save_dir) if save_dir else None})
        md = (f"# Segmentation ({s.arch}, {s.backbone}) on {s.val_split} ({len(ids)} images)\n\n"
              f"mIoU **{pct(r['miou'])}** (scales {list(s.scales)}, flip {s.flip}, CRF {s.crf})\n\n"
              + md_table(["class", "IoU", "precision", "recall"], per_class_rows(r)))
        print(md_table(["class", "IoU", "precision", "recall"], per_class_rows(r)))
        print(f"segmentation mIoU on {s.val_split}: {pct(r['miou'])}")
    else:
        md = "# Segmentation\n\nno val split\n"
    if s.test_split:
        out = export_test(cfg, model, device, progress=cfg.runtime.progress)
        result["test_export"] = str(out)
        print(f"test predictions for the evaluation server: {out}")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    j, _ = save_metrics(cfg, "seg_eval", result, md)
    print(f"saved {j}")
    return result


def eval_seg_stage(cfg: Config, device: torch.device, redo: bool) -> dict:
    """The eval_seg stage (wsss.stages; rank 0 only)."""
    return evaluate_seg(cfg, device)
