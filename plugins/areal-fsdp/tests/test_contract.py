"""The train-engine contract suite, run against the fsdp engine (one process)."""

import areal_fsdp.plugin
from areal_core.testing.train_engine import TrainEngineContract


class TestFSDPEngineContract(TrainEngineContract):
    plugin = areal_fsdp.plugin
    component_name = "fsdp"
    component_config = {"optimizer": {"lr": 1e-2}, "max_tokens_per_mb": 48}


class TestFSDPEngineContractQwen3(TestFSDPEngineContract):
    """The same suite on Qwen3 (q/k norms)."""

    tiny_arch = "qwen3"


class TestFSDPEngineContractQwen3MoE(TestFSDPEngineContract):
    """The same suite on Qwen3-MoE: experts fused in memory, per expert in the exported files."""

    tiny_arch = "qwen3_moe"
