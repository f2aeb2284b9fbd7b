"""make_cam: write one CAM file per image of a split, skipping finished ids, sharded across ranks."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsss.cam.files import cam_path, save_cam
from wsss.cam.inference import multiscale_cam, normalize_cams
from wsss.config import Config
from wsss.data.datasets import InferenceDataset, collate_single
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import unwrap
from wsss.engine.distributed import barrier, get_rank, get_world_size
from wsss.fileio import atomic_path, atomic_write_json, read_json, remove_stale_temps
from wsss.fingerprint import StaleOutputError, cam_settings, changed
from wsss.parallel import retain_freed_memory

MADE_BY = "made_by.json"  # in every CAM folder: the weights and settings its files come from
BATCH_ON_CPU = False  # cam.images_per_batch applies on CUDA (tests switch it on to check batching on the CPU)


def pending_ids(ids: list[str], out_dir: str | Path, redo: bool = False) -> list[str]:
    if redo:
        return list(ids)
    return [i for i in ids if not cam_path(out_dir, i).is_file()]


class _Batcher:
    """Groups consecutive equal-sized images (exact: each image is processed independently)."""

    def __init__(self, max_images: int):
        self.max = max(1, max_images)
        self.items: list[dict] = []

    def add(self, sample: dict) -> list[dict] | None:
        if self.items and self.items[0]["image"].shape != sample["image"].shape:
            out, self.items = self.items, [sample]
            return out
        self.items.append(sample)
        if len(self.items) >= self.max:
            out, self.items = self.items, []
            return out
        return None

    def flush(self) -> list[dict] | None:
        out, self.items = self.items, []
        return out or None


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's tensors (names and bytes), whatever its device or memory format."""
    h = hashlib.sha256()
    for k, v in sorted(unwrap(model).state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cam_fingerprint(cfg: Config, model: torch.nn.Module) -> dict:
    """What a CAM file depends on: a hash of the weights and every setting that changes a CAM
    value (wsss.fingerprint: the cam section, the model and method sections, the
    normalisation, AMP). Not the data root or the initial weights' path: moving either must
    not invalidate finished CAMs."""
    return json.loads(json.dumps({"weights_sha256": state_sha256(model), **cam_settings(cfg)}))


def _made_by(directory: Path) -> dict | None:
    f = directory / MADE_BY
    return read_json(f) if f.is_file() else None


def _stale(cfg: Config, out_dir: Path, fp: dict, before: dict | None) -> StaleOutputError | None:
    """The error for a folder whose finished CAMs were made by other weights or settings
    (or whose files have no record), or None."""
    finished = any(not p.name.startswith(".") for p in out_dir.glob("*.npz"))
    unrecorded = before is None and finished
    if not finished or (before is not None and not changed(before, fp)):
        return None  # nothing made under another record: the record is simply replaced
    return StaleOutputError("make_cam", str(out_dir / MADE_BY), changed(before, fp), "CAMs",
                            note="no made_by.json beside them" if unrecorded else "")


def stale_cam_dir(cfg: Config, model: torch.nn.Module, out_dir: str | Path) -> StaleOutputError | None:
    """What make_cams would refuse in ``out_dir`` without cam.redo (checked before anything is written)."""
    return _stale(cfg, Path(out_dir), cam_fingerprint(cfg, model), _made_by(Path(out_dir)))


def link_cams(src: Path, out_dir: Path, ids: list[str]) -> int:
    """Hard-link (or copy, then rename) ``src/<id>.npz`` into ``out_dir`` for the ids it has."""
    n = 0
    for i in ids:
        a, b = cam_path(src, i), cam_path(out_dir, i)
        if not a.is_file() or b.exists():
            continue
        try:
            os.link(a, b)
        except OSError:  # another file system: an atomic copy
            with atomic_path(b) as tmp:
                shutil.copyfile(a, tmp)
        n += 1
    return n


def make_cams(cfg: Config, model: torch.nn.Module, device: torch.device, split: str | None = None,
              out_dir: str | Path | None = None, redo: bool | None = None, progress: bool | None = None,
              reuse_from: list[Path] | None = None) -> dict:
    """CAM files for this rank's share of ``split``; returns counts and throughput.

    The folder's ``made_by.json`` records the weights and settings; finished files made by
    other ones are an error unless ``redo``. Files of a folder in ``reuse_from`` made by the
    same weights and settings are linked instead of recomputed.
    """
    c = cfg.cam
    split = split or c.split
    out_dir = Path(out_dir or c.out_dir)
    redo = c.redo if redo is None else redo
    layout = VOCLayout(cfg.data.root)
    labels = ImageLabels.load(cfg.data.label_file, cfg.data.num_classes)
    all_ids = layout.read_split(split)
    rank, world = get_rank(), get_world_size()
    fp = cam_fingerprint(cfg, model)
    before = _made_by(out_dir)
    stale = _stale(cfg, out_dir, fp, before)
    barrier()  # every rank has read the old record before rank 0 replaces it
    if stale is not None:
        if not redo:
            raise stale
        # files made by other weights or settings go before the new record is written, so a
        # killed redo never leaves them under it
        if rank == 0:
            for p in out_dir.glob("*.npz"):
                p.unlink(missing_ok=True)
            (out_dir / MADE_BY).unlink(missing_ok=True)
        barrier()
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0 and before != fp:
        atomic_write_json(out_dir / MADE_BY, fp)
    ids = pending_ids(all_ids[rank::world], out_dir, redo)
    reused = 0
    for src in [] if redo else reuse_from or []:
        if ids and Path(src).resolve() != out_dir.resolve() and _made_by(Path(src)) == fp:
            reused += link_cams(Path(src), out_dir, ids)
            ids = pending_ids(ids, out_dir, False)
    summary = {"split": split, "out_dir": str(out_dir), "images": len(all_ids), "computed_here": len(ids),
               "reused_here": reused, "skipped_here": len(all_ids[rank::world]) - len(ids) - reused}
    if not ids:
        return {**summary, "seconds": 0.0, "images_per_s": 0.0}
    remove_stale_temps(out_dir)
    dataset = InferenceDataset(cfg.data.root, ids, labels, scales=c.scales, mean=cfg.train.aug.mean, std=cfg.train.aug.std,
                               resize_mode=c.resize_mode, split_name=split)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=c.workers, collate_fn=collate_single,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if c.workers > 0 else None)
    model.eval()
    autocast = None
    if cfg.runtime.amp != "none":
        dtype = torch.bfloat16 if cfg.runtime.amp == "bf16" else torch.float16
        autocast = lambda: torch.autocast(device_type=device.type, dtype=dtype)  # noqa: E731
    # On the CPU a batch of one image and its flip already keeps the cores busy: batching
    # equal-sized images gives the same values (bit for bit) at no gain in speed, and
    # multiplies the activations held at once (a 4-image batch at scale 2: ~4x the memory).
    batcher = _Batcher(c.images_per_batch if device.type == "cuda" or BATCH_ON_CPU else 1)
    bar = None
    show = cfg.runtime.progress if progress is None else progress
    if show and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), desc="make_cam", dynamic_ncols=True)
    t0 = time.perf_counter()
    done_times: list[tuple[int, float]] = []  # (images done, time): the steady-state rate skips start-up

    def run(group: list[dict]) -> None:
        inputs = [torch.stack([g["inputs"][s] for g in group]).to(device, non_blocking=True) for s in range(len(c.scales))]
        if cfg.runtime.channels_last:
            inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
        h, w = group[0]["image"].shape[:2]
        keys = [np.nonzero(g["label"])[0] for g in group]
        # only the image's classes are upsampled and summed (the others are never saved)
        high, strided = multiscale_cam(model, inputs, (h, w), flip=c.flip,
                                       strided_stride=c.strided_stride if c.save_strided else 0, autocast=autocast,
                                       keys=[torch.from_numpy(k).to(device) for k in keys])
        for n, g in enumerate(group):
            hr = normalize_cams(high[n]).cpu().numpy()
            st = normalize_cams(strided[n]).cpu().numpy() if strided is not None else None
            save_cam(cam_path(out_dir, g["id"]), keys[n], hr, st, dtype=c.dtype)
        done_times.append((len(group), time.perf_counter()))
        if bar is not None:
            bar.update(len(group))

    # freed activations stay in the heap for the next image (no page faults; values unchanged)
    with torch.inference_mode(), retain_freed_memory():
        for sample in loader:
            group = batcher.add(sample)
            if group:
                run(group)
        group = batcher.flush()
        if group:
            run(group)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    steady = None
    if len(done_times) > 1:  # images after the first group, over the time since it finished
        steady = sum(n for n, _ in done_times[1:]) / max(done_times[-1][1] - done_times[0][1], 1e-9)
    return {**summary, "seconds": round(seconds, 2), "images_per_s": len(ids) / max(seconds, 1e-9),
            "steady_images_per_s": steady}
