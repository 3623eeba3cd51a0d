"""Test-only shim: run megatron-core **0.16.x** (the version pinned in pyproject.toml) on CPU.

megatron-core calls CUDA directly in code paths a CPU run reaches (``torch.cuda.current_device()``
as a device, the CUDA RNG of its tensor-parallel RNG tracker, ``Tensor.cuda()``, ``device="cuda"``
in tensor factories). This module redirects exactly those entry points to the CPU while it is
installed (``install()``), so the engine's real megatron code paths (GPTModel, tensor/pipeline
parallel layers, the forward-backward schedules, dist_checkpointing) run over gloo on a machine
without a GPU. It is tied to 0.16.x: :func:`install` refuses another version, because a newer
megatron may call CUDA elsewhere. Nothing outside the tests imports it; on a GPU
(``gpu_check.sh``) the same tests run without it.

Subprocesses (trainer ranks of ``areal train``) get it through ``sitecustomize.py`` in
``tests/shim_site/``, put on ``PYTHONPATH`` by the tests.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import types

import torch

PINNED = "0.16."
_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "zeros_like", "ones_like",
              "empty_like", "full_like")
_installed = False


def _cpu(device):
    if device is None:
        return None
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")) or \
            (isinstance(device, torch.device) and device.type == "cuda"):
        return torch.device("cpu")
    return device


class _TorchWithCPUFactories(types.ModuleType):
    """``torch`` as megatron's modules see it: tensor factories map ``device="cuda"`` to the CPU."""

    def __init__(self):
        super().__init__("torch")
        for name in _FACTORIES:
            setattr(self, name, self._wrap(getattr(torch, name)))

    @staticmethod
    def _wrap(original):
        @functools.wraps(original)
        def factory(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = _cpu(kwargs["device"])
            return original(*args, **kwargs)

        return factory

    def __getattr__(self, name):
        return getattr(torch, name)


def _import_megatron() -> None:
    """Import the megatron modules the engine and tests use, so the proxy reaches them all."""
    for name in ("megatron.core.parallel_state", "megatron.core.tensor_parallel", "megatron.core.models.gpt.gpt_model",
                 "megatron.core.models.gpt.gpt_layer_specs", "megatron.core.pipeline_parallel",
                 "megatron.core.pipeline_parallel.schedules", "megatron.core.pipeline_parallel.p2p_communication",
                 "megatron.core.dist_checkpointing", "megatron.core.transformer.moe.moe_layer"):
        importlib.import_module(name)


def install() -> None:
    """Redirect megatron's CUDA calls to the CPU (idempotent)."""
    global _installed
    if _installed:
        return
    from megatron.core import package_info

    if not package_info.__version__.startswith(PINNED):
        raise RuntimeError(f"tests/cpu_shim.py is written for megatron-core {PINNED}x, found {package_info.__version__}")
    cpu_rng = torch.default_generator
    torch.cuda.current_device = lambda: torch.device("cpu")  # used as a device argument
    torch.cuda.device_count = lambda: 1
    torch.cuda.get_rng_state = torch.cuda.random.get_rng_state = lambda device="cuda": cpu_rng.get_state()
    torch.cuda.set_rng_state = lambda state, device="cuda": cpu_rng.set_state(state)
    torch.cuda.manual_seed = lambda seed: cpu_rng.manual_seed(seed)  # the tracker saves and restores around it
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.set_device = lambda device: None
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    _import_megatron()
    proxy = _TorchWithCPUFactories()
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.") and getattr(module, "torch", None) is torch:
            module.torch = proxy  # megatron's own calls only: other libraries keep the real factories
    _patch_rng_tracker()
    # the CPU and the "CUDA" RNG are one generator here, so megatron's check that forking the
    # tracker leaves the CPU RNG alone (initialising expert weights) would warn on every expert
    logging.getLogger("megatron.core.tensor_parallel.random").setLevel(logging.ERROR)
    _installed = True


def _patch_rng_tracker() -> None:
    """megatron's ``_set_cuda_rng_state`` reaches into ``torch.cuda.default_generators``."""
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.default_generator.set_state(new_state)
