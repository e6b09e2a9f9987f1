"""One process or many with DDP (torchrun): which rank this is, and a flag agreed on by every rank."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup_distributed() -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) in one process."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def all_ranks(ok: bool, device: torch.device) -> bool:
    """`ok` and-ed over every rank (a no-op in one process)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([int(ok)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
