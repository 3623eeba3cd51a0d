"""Registers the ``sglang`` inference backend with areal."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_inference_backends():
    return [
        Component("sglang", "areal_sglang.backend:SGLangBackend", "areal_sglang.backend:SGLangConfig",
                  "SGLang servers (python -m sglang.launch_server, GPU), native protocol"),
    ]
