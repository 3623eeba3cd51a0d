"""Registers the ``fsdp`` train engine with areal (entry point ``areal: fsdp``)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_train_engines():
    return [
        Component("fsdp", "areal_fsdp.engine:create_engine", "areal_fsdp.config:FSDPEngineConfig",
                  "PyTorch FSDP2 engine: packed sequences, token-budget micro-batches, LoRA, HF export"),
    ]
