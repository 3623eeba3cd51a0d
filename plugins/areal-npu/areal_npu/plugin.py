"""Registers the ``npu`` device with areal (entry point ``areal: npu``)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_devices():
    return [Component("npu", "areal_npu.device:NPUDevice", None,
                      "Huawei Ascend NPUs through torch_npu, HCCL collectives (needs the CANN toolkit)")]
