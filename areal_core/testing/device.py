"""Contract suite for device types: ``type``, ``comm_backend``, ``is_available()``, ``memory_stats()``.

Subclass :class:`DeviceContract` and name the component::

    class TestNPUDevice(DeviceContract):
        plugin = areal_npu.plugin
        component_name = "npu"

Checked everywhere: ``type`` is a torch device type (where available: an extension's type,
such as ``npu``, exists in torch only once the extension loads), ``comm_backend`` names a
``torch.distributed`` backend, ``is_available()`` is a bool. Where the device is available:
``memory_stats()`` gives finite, non-negative GiB figures, a tensor round-trips through the
device, a one-rank process group over ``comm_backend`` all-reduces a tensor on it,
``torch_device(0)`` is of ``type``, ``rng_state()`` round-trips through ``set_rng_state`` (random
draws on the device repeat) and ``empty_cache()`` runs. Where it is not: ``memory_stats()``
raises ArealError (a clear message, not a driver crash).
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from areal_core.api.protocols import Device
from areal_core.errors import ArealError
from areal_core.launcher.support import free_port
from areal_core.testing.contract import ComponentContract


class DeviceContract(ComponentContract):
    kind = "device"
    protocol = Device

    @pytest.fixture
    def available_device(self, component):
        if not component.is_available():
            pytest.skip(f"device {component.type!r} is not available on this machine")
        return component

    def test_type_is_a_torch_device_type(self, component):
        import torch

        assert isinstance(component.type, str) and component.type
        if component.is_available():  # an extension's type (npu...) exists in torch once its extension loads
            assert torch.device(component.type).type == component.type

    def test_comm_backend_is_named(self, component):
        assert isinstance(component.comm_backend, str) and component.comm_backend == component.comm_backend.lower()
        assert component.comm_backend, "comm_backend must name a torch.distributed backend (gloo, nccl, hccl...)"

    def test_is_available_is_bool(self, component):
        assert isinstance(component.is_available(), bool)

    def test_memory_stats_are_finite_gib(self, available_device):
        stats = available_device.memory_stats()
        assert stats, "memory_stats() returned nothing"
        for name, value in stats.items():
            assert isinstance(name, str) and isinstance(value, float), f"{name}: {value!r}"
            assert math.isfinite(value) and value >= 0, f"{name}: {value!r}"

    def test_memory_stats_when_unavailable_raise_areal_error(self, component):
        if component.is_available():
            pytest.skip(f"device {component.type!r} is available")
        with pytest.raises(ArealError):
            component.memory_stats()

    def test_tensor_round_trip(self, available_device):
        import torch

        x = torch.arange(6, dtype=torch.float32)
        assert torch.equal(x.to(available_device.type).mul(2).cpu(), x * 2)

    def test_one_rank_process_group_all_reduces(self, available_device):
        import torch
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_backend_available(available_device.comm_backend):
            pytest.skip(f"torch.distributed backend {available_device.comm_backend!r} is not built into this torch")
        if dist.is_initialized():
            pytest.skip("a default process group already exists in this process")
        dist.init_process_group(available_device.comm_backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                rank=0, world_size=1, timeout=timedelta(seconds=60))
        try:
            x = torch.ones(3, device=available_device.type)
            dist.all_reduce(x)
            assert x.cpu().tolist() == [1.0, 1.0, 1.0]
        finally:
            dist.destroy_process_group()

    def test_torch_device_is_of_its_type(self, available_device):
        assert available_device.torch_device(0).type == available_device.type

    def test_rng_state_round_trips(self, available_device):
        import torch

        device = available_device.torch_device(0)
        cpu_state = torch.get_rng_state()
        state = available_device.rng_state()
        first = torch.rand(4, device=device).cpu()
        torch.set_rng_state(cpu_state)
        available_device.set_rng_state(state)
        assert torch.equal(torch.rand(4, device=device).cpu(), first)

    def test_empty_cache_runs(self, available_device):
        available_device.empty_cache()
