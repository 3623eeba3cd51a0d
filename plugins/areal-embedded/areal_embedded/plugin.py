"""Registers the ``embedded`` inference backend with areal."""

from areal_core.hookspecs import hookimpl
from areal_core.registry import Component


@hookimpl
def areal_register_inference_backends():
    return [
        Component("embedded", "areal_embedded.backend:EmbeddedBackend", "areal_embedded.backend:EmbeddedConfig",
                  "torch + transformers server with continuous batching, SGLang native protocol (CPU or CUDA)"),
    ]
