"""The inference-backend contract suite, run against the embedded backend."""

import areal_embedded.plugin
from areal_core.testing.inference_backend import InferenceBackendContract


class TestEmbeddedBackend(InferenceBackendContract):
    plugin = areal_embedded.plugin
    component_name = "embedded"
    component_config = {"threads": 1, "max_batch": 8}
    supported_sync_paths = ("disk", "distributed", "adapter")
