"""make_cam: write one CAM file per image of a split, skipping finished ids, sharded across ranks."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsss import layout, records
from wsss.cam.inference import multiscale_cam, normalize_cams
from wsss.config import Config
from wsss.data.cam_files import cam_path, save_cam
from wsss.data.datasets import InferenceDataset, collate_single, image_size
from wsss.data.labels import ImageLabels
from wsss.data.voc import VOCLayout
from wsss.engine.checkpoint import state_sha256
from wsss.engine.distributed import barrier, get_rank, get_world_size, is_main
from wsss.fileio import atomic_path
from wsss.parallel import release_retained_memory, retain_freed_memory, workers_for
from wsss.reports import md_table, save_metrics

BATCH_ON_CPU = False  # cam.images_per_batch applies on CUDA (tests switch it on to check batching on the CPU)


def pending_ids(ids: list[str], out_dir: str | Path, redo: bool = False) -> list[str]:
    if redo:
        return list(ids)
    return [i for i in ids if not cam_path(out_dir, i).is_file()]


def by_size(root: str | Path, ids: list[str]) -> list[str]:
    """``ids`` ordered by image size (height, width; the split's order within a size), read from
    the image headers. Every image is computed on its own, so the order changes no file; it
    puts equal sizes next to each other: on CUDA they batch (cam.images_per_batch), and on the
    CPU the retained heap is released once per size instead of at every change of size."""
    layout_ = VOCLayout(root)

    def size(i: str) -> tuple[int, int]:
        path = layout_.image(i)
        if not path.is_file():
            return 0, 0  # the dataset then names the missing file and its split
        w, h = image_size(path)
        return h, w

    return sorted(ids, key=size)


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


class _Writer:
    """Files written by a thread while the next image is computed (the device does not wait for
    the disk); at most ``pending`` files are in flight, and a failed write raises here."""

    def __init__(self, pending: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.pool, self.pending, self.futures = ThreadPoolExecutor(max_workers=1), pending, []

    def submit(self, fn, *args, **kwargs) -> None:
        self.futures.append(self.pool.submit(fn, *args, **kwargs))
        while len(self.futures) >= self.pending:
            self.futures.pop(0).result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        try:
            for f in self.futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def cam_weights_input(cfg: Config) -> dict:
    """What make_cam reads (its row's inputs, wsss.stages): the weights' tensors of
    cam.checkpoint by their SHA-256 (a checkpoint of this work_dir's training must match
    train_cam's record). When the weights file is gone (deleted to save space), the CAMs' own
    record stands for it, and every other setting must still match."""
    from wsss.cam.training import load_cam_model
    from wsss.stages import STAGES

    ckpt = Path(cfg.cam.checkpoint)
    if not ckpt.is_file():
        rec = records.recorded(cfg, STAGES["make_cam"]) or {}
        return {"weights_sha256": rec.get("inputs", {}).get("weights_sha256")}
    if layout.inside(ckpt, layout.cam_checkpoints(cfg)):
        records.checked(cfg, STAGES["train_cam"])
    settings = records.digest(records.stage_keys(cfg, STAGES["make_cam"]))
    sha = records.cached(("cam", *records.file_key(ckpt), settings), lambda: state_sha256(load_cam_model(cfg, ckpt)))
    return {"weights_sha256": sha}


def cam_record(cfg: Config, model: torch.nn.Module) -> dict:
    """make_cam's record (wsss.records) for these weights: a CAM file depends on the weights'
    tensors and every setting that changes a CAM value (the cam section, the model and
    method sections, the normalisation, AMP); not on the data root or the initial weights'
    path: moving either must not invalidate finished CAMs."""
    from wsss.stages import STAGES

    return records.expected(cfg, STAGES["make_cam"], inputs={"weights_sha256": state_sha256(model)})


def claim_cam_dir(cfg: Config, out_dir: Path, record: dict, redo: bool) -> None:
    """``out_dir`` holds CAMs of ``record``: finished files made by other weights or settings
    (or without a record) are an error unless ``redo``, which removes them first."""
    from wsss.stages import STAGES

    records.claim(STAGES["make_cam"], out_dir, record, bool(layout.finished(out_dir, "*.npz")), redo,
                  lambda: layout.discard_files(out_dir, "*.npz"))


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

    The folder's ``made_by.json`` records the weights and settings (:func:`cam_record`);
    finished files made by other ones are an error unless ``redo``. Files of a folder in
    ``reuse_from`` made by the same weights and settings are linked instead of recomputed.
    """
    c = cfg.cam
    split = split or c.split
    out_dir = Path(out_dir or c.out_dir)
    redo = c.redo if redo is None else redo
    labels = ImageLabels.load(cfg.data.label_file, cfg.data.num_classes)
    all_ids = VOCLayout(cfg.data.root).read_split(split)
    rank, world = get_rank(), get_world_size()
    record = cam_record(cfg, model)
    claim_cam_dir(cfg, out_dir, record, redo)
    ids = pending_ids(all_ids[rank::world], out_dir, redo)
    reused = 0
    for src in [] if redo else reuse_from or []:
        if ids and Path(src).resolve() != out_dir.resolve() and records.read_record(src) == record:
            reused += link_cams(Path(src), out_dir, ids)
            ids = pending_ids(ids, out_dir, False)
    summary = {"split": split, "out_dir": str(out_dir), "images": len(all_ids), "computed_here": len(ids),
               "reused_here": reused, "skipped_here": len(all_ids[rank::world]) - len(ids) - reused}
    if not ids:
        return {**summary, "seconds": 0.0, "images_per_s": 0.0}
    ids = by_size(cfg.data.root, ids)
    dataset = InferenceDataset(cfg.data.root, ids, labels, scales=c.scales, mean=cfg.train.aug.mean, std=cfg.train.aug.std,
                               resize_mode=c.resize_mode, split_name=split)
    workers = workers_for(c.workers)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=collate_single,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
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

    writer = _Writer()
    on_cpu = device.type == "cpu"
    last_size: list[tuple[int, int]] = []

    def run(group: list[dict]) -> None:
        size = tuple(group[0]["image"].shape[:2])
        if on_cpu and last_size and last_size[0] != size:
            # another image size: the heap's free pages go back to the OS, so that it holds
            # what one image size needs, not the fragments of every size seen
            release_retained_memory()
        last_size[:] = [size]
        # each pinned input goes to the device as it is (asynchronously) and is batched there
        inputs = [torch.stack([g["inputs"][s].to(device, non_blocking=True) for g in group]) for s in range(len(c.scales))]
        if cfg.runtime.channels_last:
            inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
        h, w = group[0]["image"].shape[:2]
        keys = [np.nonzero(g["label"])[0] for g in group]
        # only the image's classes are upsampled and summed (the others are never saved)
        high, strided = multiscale_cam(model, inputs, (h, w), flip=c.flip,
                                       strided_stride=c.strided_stride if c.save_strided else 0, autocast=autocast,
                                       keys=[torch.from_numpy(k).to(device) for k in keys], flip_apart=on_cpu,
                                       largest_first=True)
        for n, g in enumerate(group):
            hr = normalize_cams(high[n]).cpu().numpy()
            st = normalize_cams(strided[n]).cpu().numpy() if strided is not None else None
            writer.submit(save_cam, cam_path(out_dir, g["id"]), keys[n], hr, st, dtype=c.dtype)
        done_times.append((len(group), time.perf_counter()))
        if bar is not None:
            bar.update(len(group))

    # freed activations stay in the heap for the next image (no page faults; values unchanged)
    with torch.inference_mode(), retain_freed_memory(), writer:
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


def make_cam_stage(cfg: Config, device: torch.device, redo: bool, split: str | None = None) -> dict:
    """The make_cam stage (wsss.stages): the CAMs of cam.split from cam.checkpoint's weights."""
    from wsss.cam.training import load_cam_model
    from wsss.registry import cam_sources

    model = load_cam_model(cfg, cfg.cam.checkpoint, device)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    summary = make_cams(cfg, model, device, split=split, redo=redo, reuse_from=cam_sources(cfg))
    barrier()
    if is_main():
        summary["ranks"] = get_world_size()
        save_metrics(cfg, "make_cam", summary, md_table(
            ["split", "images", "computed (rank 0)", "reused (rank 0)", "images/s (rank 0)"],
            [[summary["split"], summary["images"], summary["computed_here"], summary["reused_here"], f"{summary['images_per_s']:.2f}"]]))
        reused = f", {summary['reused_here']} linked from the training run's own CAMs" if summary["reused_here"] else ""
        print(f"CAMs of {summary['images']} images in {summary['out_dir']} "
              f"({summary['computed_here']} computed on rank 0{reused}, {summary['images_per_s']:.2f} images/s)")
    return summary
