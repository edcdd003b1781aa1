"""Several training processes (DDP under ``torchrun``): set-up and the few collectives the
epoch loop needs. Train stage."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from aue_edge.train.runtime import select_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_request: str) -> tuple[torch.device, DistInfo]:
    """Single process unless started by torchrun (WORLD_SIZE > 1): then DDP, NCCL on one GPU
    per rank, or Gloo on the CPU (no GPU, or ``device: cpu``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return select_device(device_request), DistInfo()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_request != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device, DistInfo(dist.get_rank(), dist.get_world_size())


def mean_over_ranks(values: dict[str, float], dist_info: DistInfo) -> dict[str, float]:
    """Each key's mean over the ranks (every rank holds the same keys); as is on one process."""
    if dist_info.world_size <= 1 or not values:
        return values
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return {k: float(v) / dist_info.world_size for k, v in zip(keys, total.tolist())}


def from_main(value: Any, dist_info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; other ranks pass None)."""
    if dist_info.world_size <= 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
