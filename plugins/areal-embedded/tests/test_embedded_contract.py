"""The inference-backend contract suite, run against the embedded backend."""

import pytest

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

    def test_adapter_changes_outputs_as_peft_says(self, server, tmp_path):
        """peft's all-linear LoRA on Qwen3-MoE also adapts the fused expert tensors (through an
        ``alpha_pattern``), which the server's merge does not reproduce: refused by name, weights
        and version unchanged."""
        from areal_core.plugin import ArealError, ModelRequest, WeightUpdateMeta
        from areal_core.testing.inference_backend import PROMPTS, greedy, make_lora_adapter

        before = self.generate(server, ModelRequest(PROMPTS[2], greedy(8, ignore_eos=True)))
        adapter = make_lora_adapter(server.model_path, tmp_path / "adapter", seed=1)
        with pytest.raises(ArealError, match="alpha_pattern"):
            self.push(server, WeightUpdateMeta(type="adapter"), str(adapter), before.output_versions[0] + 1)
        after = self.generate(server, ModelRequest(PROMPTS[2], greedy(8, ignore_eos=True)))
        assert (after.output_ids, after.output_versions) == (before.output_ids, before.output_versions)
