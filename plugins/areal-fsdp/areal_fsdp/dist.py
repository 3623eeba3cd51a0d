"""The process group the engine shards over: join an existing one, or create one.

Three ways a rank gets here:

* the launcher already called ``torch.distributed.init_process_group`` (torchrun scripts,
  ``mp.start_processes`` with ``init_method="tcp://127.0.0.1:PORT"``): the engine uses it;
* torchrun-style environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): the
  engine initialises the default group from it;
* nothing: a one-rank group on an in-memory store (single-process training, tests).

Groups the engine created are destroyed when the last engine that uses them is destroyed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_owned_users = 0  # engines in this process using a default group that an engine created


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    backend: str


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(1, torch.cuda.device_count())
                                        if dist.is_initialized() else 0))
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_choice: str) -> DistInfo:
    """Join or create the default process group; return this rank's place in it."""
    global _owned_users
    wants_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if dist.is_initialized():
        if _owned_users:
            _owned_users += 1
    elif "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend=backend, init_method="env://")
        _owned_users = 1
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        _owned_users = 1
    device = resolve_device(device_choice)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, dist.get_backend())


def teardown() -> None:
    """Drop this engine's use of the default group; destroy it if an engine created it and none remain."""
    global _owned_users
    if _owned_users:
        _owned_users -= 1
        if _owned_users == 0 and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over every rank (float64, so token counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
