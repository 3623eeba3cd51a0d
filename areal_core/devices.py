"""The built-in device types: where tensors live and which collective backend joins the ranks.

A device is built as ``factory(config)``; ``type`` is the torch device type and
``comm_backend`` the ``torch.distributed`` backend for ranks on that device. Memory figures are
GiB. torch is imported only when a device is asked for tensors, RNG state or memory.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

from areal_core.config.base import ComponentConfig
from areal_core.errors import ArealError

GIB = 1024**3


class CPUDevice:
    """CPU tensors joined by gloo. ``memory_stats``: this process's resident memory and the host's."""

    type = "cpu"
    comm_backend = "gloo"

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config

    def is_available(self) -> bool:
        return True

    def memory_stats(self) -> dict[str, float]:
        """``rss_gib`` (now), ``peak_rss_gib`` (high-water mark), ``host_total_gib``, ``host_available_gib``."""
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peak = peak_kib if sys.platform == "darwin" else peak_kib * 1024
        stats = {"peak_rss_gib": peak / GIB}
        page = os.sysconf("SC_PAGE_SIZE")
        try:
            with open("/proc/self/statm") as f:
                stats["rss_gib"] = int(f.read().split()[1]) * page / GIB
        except OSError:
            stats["rss_gib"] = stats["peak_rss_gib"]  # no procfs: the high-water mark is the best we know
        stats["host_total_gib"] = os.sysconf("SC_PHYS_PAGES") * page / GIB
        try:
            stats["host_available_gib"] = os.sysconf("SC_AVPHYS_PAGES") * page / GIB
        except (ValueError, OSError):
            pass
        return stats

    def torch_device(self, local_rank: int):
        """Every rank computes on ``cpu`` (there is no current CPU to set)."""
        import torch

        return torch.device("cpu")

    def rng_state(self) -> Any:
        return None  # the CPU generator is torch's default one, which checkpoints save anyway

    def set_rng_state(self, state: Any) -> None:
        pass

    def empty_cache(self) -> None:
        pass


class CUDADevice:
    """NVIDIA GPUs joined by NCCL. ``memory_stats`` describes the current CUDA device."""

    type = "cuda"
    comm_backend = "nccl"

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config

    def is_available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def memory_stats(self) -> dict[str, float]:
        """``allocated_gib``, ``reserved_gib``, ``peak_allocated_gib`` (torch's caching allocator),
        ``free_gib`` and ``total_gib`` (the driver's view of the whole device)."""
        import torch

        if not torch.cuda.is_available():
            raise ArealError("device 'cuda': no CUDA device is visible (torch.cuda.is_available() is False)")
        free, total = torch.cuda.mem_get_info()
        return {
            "allocated_gib": torch.cuda.memory_allocated() / GIB,
            "reserved_gib": torch.cuda.memory_reserved() / GIB,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
            "free_gib": free / GIB,
            "total_gib": total / GIB,
        }

    def torch_device(self, local_rank: int):
        """``cuda:<local_rank mod visible GPUs>``, made current."""
        import torch

        if not torch.cuda.is_available():
            raise ArealError("device 'cuda': no CUDA device is visible (torch.cuda.is_available() is False)")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device

    def rng_state(self) -> Any:
        """The generator state of every visible GPU."""
        import torch

        return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def set_rng_state(self, state: Any) -> None:
        import torch

        if state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state)

    def empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
