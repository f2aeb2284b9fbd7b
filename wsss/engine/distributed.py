"""torch.distributed set-up under torchrun (NCCL on CUDA, gloo on CPU) and rank helpers."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def main_first(fn) -> None:
    """``fn()`` on rank 0 while every other rank waits, before and after (e.g. removing a
    folder's leftover temporary files before any rank writes there)."""
    barrier()
    if is_main():
        fn()
    barrier()


def init_distributed(device: torch.device, backend: str = "auto") -> bool:
    """Initialise the process group when launched by torchrun (one process too: the same path
    as on several GPUs). ``backend``: auto = nccl on CUDA, gloo on the CPU."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # long CPU stages (the CRF over COCO) can keep ranks at a barrier for a while
    dist.init_process_group(backend=backend, timeout=timedelta(hours=4))
    return True


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def select_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but CUDA is not available")
        # more ranks than GPUs (gloo, several ranks on one GPU) share them round robin
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
