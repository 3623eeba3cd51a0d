"""The inference-backend contract suite, run against the embedded backend."""

import areal_embedded.plugin
from areal_core.testing.inference_backend import InferenceBackendContract


class TestEmbeddedBackend(InferenceBackendContract):
    plugin = areal_embedded.plugin
    component_name = "embedded"
    component_config = {"threads": 1, "max_batch": 8}
    supported_sync_paths = ("disk", "distributed", "adapter")


class TestEmbeddedBackendQwen3(TestEmbeddedBackend):
    """The same suite serving Qwen3 (q/k norms)."""

    model_arch = "qwen3"


class TestEmbeddedBackendQwen3MoE(TestEmbeddedBackend):
    """The same suite serving Qwen3-MoE: updates carry per-expert names, the server fuses them."""

    model_arch = "qwen3_moe"
