"""Run a function on several spawned ranks, the way tests of multi-rank engines and algorithms do.

``run_ranks(fn, world, *args)`` starts ``world`` processes (``spawn``), each with a torchrun-style
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a port
from ``free_port``), one thread, and the default group created before ``fn`` runs (gloo on CPU,
NCCL with CUDA), then calls ``fn(rank, *args)``. It raises if any rank fails. ``fn`` and ``setup``
must be importable by name in a child: module-level functions of a module on ``sys.path``.
``setup()``, when given, runs in each child before the group is created.

A rank whose work succeeded leaves together with the others (a barrier, then the group destroyed)
and exits without interpreter finalization: gloo's worker threads can abort a process at teardown
(SIGABRT, "terminate called without an active exception") while objects they reference are freed,
which would fail a test whose every rank did its work. What finalization would have stopped is
stopped first: the rank's multiprocessing children (e.g. the Manager a megatron checkpoint save
starts) are terminated, so none outlives the test.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any


def run_ranks(fn: Callable[..., None], world: int, *args: Any, setup: Callable[[], None] | None = None) -> None:
    """``fn(rank, *args)`` on ``world`` spawned ranks joined in one default group; raises if a rank fails."""
    import torch.multiprocessing as mp

    from areal_core.launcher.support import free_port

    mp.start_processes(_rank_entry, args=(fn, world, free_port(), args, setup), nprocs=world, join=True,
                       start_method="spawn")


def _rank_entry(rank: int, fn: Callable[..., None], world: int, port: int, args: tuple,
                setup: Callable[[], None] | None) -> None:
    import torch
    import torch.distributed as dist

    from areal_core.launcher.support import die_with_parent

    die_with_parent()  # a rank left blocked in a collective by a failed peer dies with the test process
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    if setup is not None:
        setup()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    try:
        fn(rank, *args)
        dist.barrier()  # leave together: a rank tearing down its group while a peer still uses it aborts
    finally:
        dist.destroy_process_group()
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
