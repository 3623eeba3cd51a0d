"""The npu device on a machine without Ascend hardware or CANN: it passes the device contract
(its on-device checks skip), says it is unavailable, and every on-device call fails with an
ArealError naming what is missing: torch_npu itself, or (torch_npu installed without CANN) the
CANN library the import could not load."""

import builtins

import pytest

import areal_npu.plugin
from areal_core.plugin import ArealError
from areal_core.registry import build_registry
from areal_core.testing.device import DeviceContract
from areal_npu import device as npu_device


class TestNPUDeviceContract(DeviceContract):
    plugin = areal_npu.plugin
    component_name = "npu"


@pytest.fixture
def fresh_import():
    npu_device.load_torch_npu.cache_clear()
    yield
    npu_device.load_torch_npu.cache_clear()


@pytest.fixture
def cann_missing(monkeypatch, fresh_import):
    """``import torch_npu`` failing as it does with torch-npu 2.13.0 installed and no CANN:
    ``ImportError: libhccl.so: cannot open shared object file`` (measured on this machine)."""
    real_import = builtins.__import__

    def import_(name, *args, **kwargs):
        if name == "torch_npu":
            raise ImportError("libhccl.so: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_)


def test_registered_with_hccl():
    device = build_registry(extra_plugins=[(areal_npu.plugin, "areal-npu")], entry_points=False).create("device", "npu")
    assert (device.type, device.comm_backend) == ("npu", "hccl")


def test_without_cann_unavailable_and_errors_name_the_library(cann_missing):
    device = npu_device.NPUDevice()
    assert device.is_available() is False
    for call in (device.memory_stats, lambda: device.torch_device(0), device.rng_state):
        with pytest.raises(ArealError, match=r"device 'npu': torch_npu is installed but cannot be imported "
                                             r"\(libhccl\.so: .*CANN toolkit"):
            call()
    device.empty_cache()  # nothing cached where nothing ran: no error


def test_without_torch_npu_the_error_says_how_to_install_it(fresh_import):
    import importlib.util

    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed here")
    with pytest.raises(ArealError, match=r"torch_npu is not installed \(pip install 'areal-npu\[torch-npu\]'"):
        npu_device.NPUDevice().memory_stats()


def test_an_engine_asked_for_npu_fails_before_building_anything(cann_missing, tmp_path):
    from areal_core.plugin import engine_device
    from areal_core.testing.engines import run_context

    with pytest.raises(ArealError, match=r"train engine 'fsdp': device 'npu' is not available"):
        engine_device("auto", run_context(tmp_path, device=npu_device.NPUDevice()), "fsdp")
