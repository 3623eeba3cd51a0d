"""Run a function on several gloo ranks (``mp.start_processes``, spawn) the way ``areal train``
ranks run: torchrun-style environment, the default group created before any engine (engines
join it; gloo on CPU, NCCL on GPUs), one thread per rank, and (without CUDA) the test-only CPU shim installed first."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from areal_core.testing import ranks

HERE = str(Path(__file__).parent)


def run_ranks(fn, world: int, *args) -> None:
    """``fn(rank, *args)`` on ``world`` ranks; raises if any rank fails."""
    ranks.run_ranks(fn, world, *args, setup=install_cpu_shim)


def install_cpu_shim() -> None:
    """Without CUDA, the test-only shim that lets Megatron-Core run on gloo; before the group exists."""
    sys.path.insert(0, HERE)
    if not torch.cuda.is_available():
        import cpu_shim

        cpu_shim.install()
