"""Process pools for the CPU-bound per-image stages (CRF, evaluation), and the heap setting
of the tensor-heavy stages (make_cam, training)."""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import sys
from typing import Callable, Iterable, Iterator


def node_cores() -> int:
    """The cores this process may use (its affinity; a container's quota can be lower still)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def workers_for(n: int, whole_node: bool = False) -> int:
    """Worker processes for a pool or a loader: ``n`` when set (>= 0); -1 = the node's cores
    shared by the ranks torchrun started on it (LOCAL_WORLD_SIZE), or all of them for work
    that runs on rank 0 alone while the others wait (the evaluations)."""
    if n >= 0:
        return n
    ranks = 1 if whole_node else max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, node_cores() // ranks)


def _context():
    # fork is fast and shares read-only state; fall back to spawn where fork is unavailable
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")


def imap_unordered(fn: Callable, items: Iterable, workers: int, chunksize: int = 4) -> Iterator:
    """``fn`` over ``items`` in ``workers`` processes (0 or 1: in this process)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with retain_freed_memory():
            for it in items:
                yield fn(it)
        return
    with _context().Pool(processes=min(workers, len(items)), initializer=_init_worker) as pool:
        yield from pool.imap_unordered(fn, items, chunksize=chunksize)


def chunks(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def _init_worker() -> None:
    _limit_threads()
    # a pool worker lives for one stage: its heap keeps what it frees (see retain_freed_memory)
    retain_freed_memory().__enter__()


def _limit_threads() -> None:
    # one CPU-bound process per core: no nested thread pools
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def retain_freed_memory(enabled: bool = True):
    """Keep freed memory in this process's heap while a tensor-heavy loop runs (glibc only).

    glibc serves every allocation above 32 MiB with its own mmap and unmaps it on free, so
    each large activation of a CNN forward/backward comes back as fresh pages: the kernel
    zeroes and maps them (page faults) on every call. On a 2-core CPU that was a fifth of
    make_cam's and train_cam's time, all of it system time. Inside this context large blocks
    come from the heap and stay there for the next step; nothing else changes (the same
    values, bit for bit). On exit the heap's free pages go back to the OS and glibc's
    thresholds are set to where its own dynamic rule would have taken them (32 MiB).
    """
    global _retaining
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    if _retaining == 0:
        libc.mallopt(_M_MMAP_MAX, 0)  # no mmap'd blocks: everything from the heap, reused
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # (an int) never shrink the heap in between
    _retaining += 1  # nested uses (an evaluation inside training) leave it to the outermost
    try:
        yield
    finally:
        _retaining -= 1
        if _retaining == 0:
            libc.mallopt(_M_MMAP_MAX, 65536)
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
            libc.malloc_trim(0)


_retaining = 0


def release_retained_memory() -> None:
    """Inside retain_freed_memory: give the heap's free pages back to the OS now (their
    addresses stay reserved; the next use faults them in again). make_cam calls it when the
    image size changes, so the heap holds what one image size needs, not the fragments of
    every size met (without it, on VOC-sized images, the heap grew by about 0.5 GB with each
    new size)."""
    libc = _glibc() if _retaining else None
    if libc is not None:
        libc.malloc_trim(0)
