"""``areal_core.plugin.engine_device`` / ``join_process_group``: how a train engine gets its device
and process group without naming a device type or a collective backend."""

import pytest

from areal_core.devices import CPUDevice
from areal_core.errors import ArealError
from areal_core.plugin import engine_device, join_process_group, leave_process_group
from areal_core.testing.engines import run_context


class AbsentDevice(CPUDevice):
    type, comm_backend = "npu", "hccl"

    def is_available(self) -> bool:
        return False


def test_auto_is_the_run_device():
    device = CPUDevice()
    assert engine_device("auto", run_context("m", device=device), "fsdp") is device


def test_a_name_builds_the_registered_device():
    assert engine_device("cpu", run_context("m", device=AbsentDevice()), "fsdp").type == "cpu"


def test_an_unavailable_device_is_a_clear_error():
    with pytest.raises(ArealError, match=r"train engine 'fsdp': device 'npu' is not available"):
        engine_device("auto", run_context("m", device=AbsentDevice()), "fsdp")


def test_an_unknown_device_name_is_a_clear_error():
    with pytest.raises(ArealError, match="tpu"):
        engine_device("tpu", None, "fsdp")


def test_join_creates_a_one_rank_group_over_the_devices_backend_and_leave_destroys_it():
    import torch.distributed as dist

    assert not dist.is_initialized()
    info = join_process_group(CPUDevice())
    try:
        assert (info.rank, info.world_size, info.backend, info.device.type) == (0, 1, "gloo", "cpu")
        again = join_process_group(CPUDevice())  # a second engine in the same process joins it
        leave_process_group()
        assert dist.is_initialized() and again.world_size == 1
    finally:
        leave_process_group()
    assert not dist.is_initialized()
