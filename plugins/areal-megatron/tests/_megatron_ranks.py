"""Run a function on several gloo ranks (``mp.start_processes``, spawn) the way ``areal train``
ranks run: torchrun-style environment, the default group created before any engine (engines
join it; gloo on CPU, NCCL on GPUs), one thread per rank, and (without CUDA) the test-only CPU shim installed first."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import torch

from areal_core.testing import ranks

HERE = str(Path(__file__).parent)


def run_ranks(fn, world: int, *args) -> None:
    """``fn(rank, *args)`` on ``world`` ranks; raises if any rank fails."""
    ranks.run_ranks(_reaping, world, fn, *args, setup=install_cpu_shim)


def _reaping(rank: int, fn, *args) -> None:
    """``fn(rank, *args)``, then end the rank's own child processes: a ``dist_checkpointing`` save
    starts a multiprocessing Manager (megatron's write-results queue) that only interpreter
    finalization would stop, and a rank exits without it (see areal_core.testing.ranks)."""
    try:
        fn(rank, *args)
    finally:
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(10)


def install_cpu_shim() -> None:
    """Without CUDA, the test-only shim that lets Megatron-Core run on gloo; before the group exists."""
    sys.path.insert(0, HERE)
    if not torch.cuda.is_available():
        import cpu_shim

        cpu_shim.install()
