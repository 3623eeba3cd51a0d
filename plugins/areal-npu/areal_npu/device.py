"""The ``npu`` device: Huawei Ascend NPUs, which torch reaches through the ``torch_npu`` extension.

``torch_npu`` registers the ``npu`` device type (``torch.npu``, the same module API as
``torch.cuda``) and the ``hccl`` collective backend. Its compiled part links against Huawei's CANN
toolkit (``libhccl.so``, ``libascendcl.so``...), which no Python registry ships: without CANN,
``import torch_npu`` fails with ``ImportError: libhccl.so: cannot open shared object file``. This
device then reports ``is_available() == False`` and every on-device call raises an ArealError
saying which library is missing and how to get it, instead of a loader traceback.

Memory figures are GiB, as for ``cuda``.
"""

from __future__ import annotations

import functools
from typing import Any

from areal_core.plugin import ArealError, ComponentConfig

GIB = 1024**3
CANN_HINT = ("install Huawei's CANN toolkit (it provides libhccl.so, libascendcl.so) and "
             "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` before starting areal; see docs/npu.md")


@functools.cache
def load_torch_npu() -> tuple[Any, str]:
    """``(torch.npu, "")`` when ``torch_npu`` imports, else ``(None, why)`` naming what is missing."""
    try:
        import torch_npu  # noqa: F401  # registers torch.npu and the hccl backend
    except ModuleNotFoundError as exc:
        if exc.name != "torch_npu":
            raise
        return None, "torch_npu is not installed (pip install 'areal-npu[torch-npu]', pinned to this torch)"
    except (ImportError, OSError, RuntimeError) as exc:  # the CANN shared libraries are not on the loader path
        return None, f"torch_npu is installed but cannot be imported ({exc}): {CANN_HINT}"
    import torch

    return torch.npu, ""  # type: ignore[attr-defined]  # added by torch_npu


class NPUDevice:
    """Ascend NPUs joined by HCCL. ``memory_stats`` describes the current NPU."""

    type = "npu"
    comm_backend = "hccl"

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config

    def _npu(self) -> Any:
        """``torch.npu`` with at least one NPU visible, else an ArealError saying why not."""
        npu, why = load_torch_npu()
        if npu is None:
            raise ArealError(f"device 'npu': {why}")
        if not npu.is_available():
            raise ArealError("device 'npu': torch_npu imports but sees no NPU (torch.npu.is_available() is False; "
                             "check ASCEND_RT_VISIBLE_DEVICES and `npu-smi info`)")
        return npu

    def is_available(self) -> bool:
        npu, _ = load_torch_npu()
        return bool(npu is not None and npu.is_available())

    def memory_stats(self) -> dict[str, float]:
        """``allocated_gib``, ``reserved_gib``, ``peak_allocated_gib`` (torch_npu's caching
        allocator), ``free_gib`` and ``total_gib`` (the driver's view of the whole NPU)."""
        npu = self._npu()
        free, total = npu.mem_get_info()
        return {
            "allocated_gib": npu.memory_allocated() / GIB,
            "reserved_gib": npu.memory_reserved() / GIB,
            "peak_allocated_gib": npu.max_memory_allocated() / GIB,
            "free_gib": free / GIB,
            "total_gib": total / GIB,
        }

    def torch_device(self, local_rank: int):
        """``npu:<local_rank mod visible NPUs>``, made current."""
        import torch

        npu = self._npu()
        device = torch.device("npu", local_rank % npu.device_count())
        npu.set_device(device)
        return device

    def rng_state(self) -> Any:
        """The generator state of every visible NPU."""
        return self._npu().get_rng_state_all()

    def set_rng_state(self, state: Any) -> None:
        if state is not None:
            self._npu().set_rng_state_all(state)

    def empty_cache(self) -> None:
        if self.is_available():
            self._npu().empty_cache()
