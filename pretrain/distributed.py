"""Process-group set-up from torchrun's environment: gloo on CPU, nccl on CUDA, or none."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from facesift.common.runtime import env_rank, process_group_world


class DeviceUnavailable(ValueError, RuntimeError):
    """`device: cuda` on a machine without CUDA: the user's to fix (a ValueError: exit 2), and a
    RuntimeError for callers that caught that before."""


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); single process otherwise."""
    rank, world, local = env_rank()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device={device} requested but CUDA is not available here: use device=cpu or auto")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local, dev)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one without a process group)."""
    world = process_group_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest `value` of all ranks, on every rank (one tiny all-reduce)."""
    if process_group_world() == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
