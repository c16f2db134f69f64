"""Data-parallel training under `torchrun`: which rank this is, and summing metrics over ranks.

With WORLD_SIZE > 1 each rank joins the process group (nccl on CUDA, gloo on CPU)
and takes its share of every batch; only rank 0 (`Dist.main`) talks and writes.

Depends on: torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        if self.world == 1:
            return list(values)
        stacked = torch.stack([v.double() for v in values])
        dist.all_reduce(stacked)
        return list(stacked)


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    return Dist(rank, world), device_name


def wrap_ddp(model: torch.nn.Module, dist_info: Dist, device: torch.device) -> torch.nn.Module:
    if dist_info.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
