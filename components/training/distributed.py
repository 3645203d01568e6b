"""Data-parallel training across processes with torch.distributed (launched by torchrun).

The training loop only asks `current()` which rank it is; joining the process group from
torchrun's environment is the adapters' job (`init_from_env`), so the logic never reads env vars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def init_from_env(backend: str = "") -> DistInfo:
    """Join the process group torchrun describes in the environment; a no-op for one process."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return current()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (the others pass anything, e.g. None)."""
    import torch.distributed as dist

    if current().world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_all(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    import torch.distributed as dist

    info = current()
    if info.world_size == 1:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def average_(tensor: Any) -> Any:
    """Average a tensor across processes, in place."""
    import torch.distributed as dist

    if current().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.AVG if dist.get_backend() != "gloo" else dist.ReduceOp.SUM)
        if dist.get_backend() == "gloo":  # gloo has no AVG
            tensor /= current().world_size
    return tensor


def barrier() -> None:
    import torch.distributed as dist

    if current().world_size > 1:
        dist.barrier()
