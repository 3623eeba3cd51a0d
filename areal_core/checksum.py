"""A checksum of named tensors: equal wherever the same weights live (trainer, inference server).

    tensors_checksum(model.named_parameters()) == "sha256:3f2a..."

Tensors are taken in name order, each as contiguous float32 bytes on the CPU, with its name and
shape hashed before its data. So the checksum depends on names, shapes and values only, not on
the order tensors arrive in, their dtype of storage (a bf16 copy checksums as its float32
upcast), or the device. Used to verify that a weight sync left the servers with exactly the
trainer's weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def tensors_checksum(named_tensors: Iterable) -> str:
    """``"sha256:<hex>"`` over ``(name, tensor)`` pairs (see module docstring)."""
    import torch

    items = sorted(((name, tensor) for name, tensor in named_tensors), key=lambda item: item[0])
    h = hashlib.sha256()
    for name, tensor in items:
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(data.shape)}\0".encode())
        h.update(data.numpy().tobytes())
    return "sha256:" + h.hexdigest()
