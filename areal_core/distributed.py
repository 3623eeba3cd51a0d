"""The process group a train engine works in, on the device the run selected.

Engines never name a device type or a collective backend: they get a
:class:`~areal_core.api.Device` (:func:`engine_device`) and join the default process group
through it (:func:`join_process_group`). Three ways a rank gets here:

* the launcher already called ``torch.distributed.init_process_group`` (``areal train`` ranks,
  torchrun scripts, ``mp.start_processes`` with ``init_method="tcp://127.0.0.1:PORT"``): joined;
* torchrun-style environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): the
  default group is initialised from it with the device's ``comm_backend``;
* nothing: a one-rank group on an in-memory store (single-process training, tests).

Groups an engine created are destroyed when the last engine that joined them leaves
(:func:`leave_process_group`). torch is imported when these functions run, not at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from areal_core.errors import ArealError

if TYPE_CHECKING:
    import torch

    from areal_core.api.protocols import Device
    from areal_core.api.types import RunContext

_owned_users = 0  # engines in this process using a default group that an engine created


@dataclass(frozen=True)
class DistInfo:
    """This rank's place: ``rank`` of ``world_size`` in the default group, computing on ``device``
    (a ``torch.device``) of the Device component ``accelerator``, joined over ``backend``."""

    rank: int
    world_size: int
    device: torch.device
    backend: str
    accelerator: Any  # the Device component (Any: a Protocol instance, not a dataclass field type)


def engine_device(name: str, run: RunContext | None, engine: str) -> Device:
    """The Device a train engine named ``engine`` computes on.

    ``name`` is the engine config's ``device``: a registered device name (``cpu``, ``cuda``, a
    plugin's ``npu``...), or ``auto``: the run's device (``run.device``, the ``device:`` section
    of ``areal train``), else (standalone use) ``cuda`` when available, else ``cpu``. Raises
    ArealError naming the engine and device when the device is not available here.
    """
    if name == "auto":
        if run is not None and run.device is not None:
            return _check_available(run.device, engine)
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    from areal_core.registry import get_registry

    return _check_available(get_registry().create("device", name), engine)


def _check_available(device: Device, engine: str) -> Device:
    if not device.is_available():
        raise ArealError(f"train engine {engine!r}: device {device.type!r} is not available on this machine "
                         f"(its plugin's is_available() is False); choose another `device`")
    return device


def join_process_group(device: Device) -> DistInfo:
    """Join (or create) the default process group over ``device.comm_backend``; make this
    rank's device current. Pair every call with :func:`leave_process_group`."""
    import torch.distributed as dist

    global _owned_users
    backend = device.comm_backend
    if dist.is_initialized():
        if _owned_users:
            _owned_users += 1
    elif "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend=backend, init_method="env://")
        _owned_users = 1
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        _owned_users = 1
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return DistInfo(rank, dist.get_world_size(), device.torch_device(local_rank), dist.get_backend(), device)


def leave_process_group() -> None:
    """Drop one engine's use of the default group; destroy it if an engine created it and none remain."""
    import torch.distributed as dist

    global _owned_users
    if _owned_users:
        _owned_users -= 1
        if _owned_users == 0 and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device, group: Any = None) -> list[float]:
    """Sum a few floats over the ranks of ``group`` (default: all), in float64 so token counts stay exact."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, group=group)
    return t.tolist()
