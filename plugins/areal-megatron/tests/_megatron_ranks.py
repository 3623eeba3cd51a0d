"""Run a function on several gloo ranks (``mp.start_processes``, spawn) the way ``areal train``
ranks run: torchrun-style environment, the default group created before any engine (engines
join it; gloo on CPU, NCCL on GPUs), one thread per rank, and (without CUDA) the test-only CPU shim installed first."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

HERE = str(Path(__file__).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn, world: int, *args) -> None:
    """``fn(rank, *args)`` on ``world`` ranks; raises if any rank fails."""
    mp.start_processes(_entry, args=(fn, world, free_port(), args), nprocs=world, start_method="spawn", join=True)


def _entry(rank: int, fn, world: int, port: int, args: tuple) -> None:
    from areal_core.plugin import die_with_parent

    die_with_parent()  # a rank left blocked in a collective by a failed peer dies with the test process
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    if not torch.cuda.is_available():
        import cpu_shim

        cpu_shim.install()
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()
