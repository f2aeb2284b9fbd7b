"""Process pools for the CPU-bound per-image stages (CRF, evaluation)."""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterable, Iterator


def _context():
    # fork is fast and shares read-only state; fall back to spawn where fork is unavailable
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")


def imap_unordered(fn: Callable, items: Iterable, workers: int, chunksize: int = 4) -> Iterator:
    """``fn`` over ``items`` in ``workers`` processes (0 or 1: in this process)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for it in items:
            yield fn(it)
        return
    with _context().Pool(processes=min(workers, len(items)), initializer=_limit_threads) as pool:
        yield from pool.imap_unordered(fn, items, chunksize=chunksize)


def chunks(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def _limit_threads() -> None:
    # one CPU-bound process per core: no nested thread pools
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
