"""Registers the ``megatron`` train engine with areal (entry point ``areal: megatron``)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_train_engines():
    return [
        Component("megatron", "areal_megatron.engine:create_engine", "areal_megatron.config:MegatronEngineConfig",
                  "megatron-core GPTModel: tensor/pipeline/data parallel, 1F1B, dist_checkpointing resharding, HF export"),
    ]
