"""Registers the ``embedded`` inference backend with areal."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_inference_backends():
    return [
        Component("embedded", "areal_embedded.backend:EmbeddedBackend", "areal_embedded.backend:EmbeddedConfig",
                  "torch + transformers server with continuous batching, SGLang native protocol (CPU or CUDA)"),
    ]
