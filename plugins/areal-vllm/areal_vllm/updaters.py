"""Weight updaters of the ``vllm`` backend (built by ``VLLMBackend.weight_updater``).

Both commit the new version on every server with ``POST /update_weight_version`` once the
weights are in, so responses generated afterwards carry it (see :mod:`areal_vllm.backend`).

=========  ===========================================================================================
disk       ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}``
           then ``/reset_prefix_cache``; tied embeddings get an explicit ``lm_head`` first
           (:mod:`areal_vllm.lm_head`)
adapter    ``POST /v1/load_lora_adapter {"lora_name": NAME, "lora_path": DIR, "load_inplace": true}``:
           the first push loads the adapter, later ones replace its weights in place; requests then
           go to model NAME (base weights + adapter)
=========  ===========================================================================================
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from areal_core.plugin import ArealError, WeightUpdateMeta
from areal_vllm.lm_head import add_tied_lm_head
from areal_vllm.protocol import request

if TYPE_CHECKING:
    import httpx


def _directory(weights: Any, must_hold: str, what: str) -> Path:
    if not isinstance(weights, str) or not weights:
        raise ArealError(f"{what} weight update needs a directory path (got {type(weights).__name__})")
    path = Path(weights)
    if not (path / must_hold).is_file():
        raise ArealError(f"{what} weight update: {path} has no {must_hold} (is it the directory the trainer exported?)")
    return path


def _files_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


async def _on_all(addrs: list[str], call) -> None:
    await asyncio.gather(*(call(addr) for addr in addrs))


async def commit_version(client: httpx.AsyncClient, addrs: list[str], version: int) -> None:
    await _on_all(addrs, lambda a: request(client, a, "POST", "/update_weight_version", body={"new_version": str(version)}))


async def check_rl_endpoints(client: httpx.AsyncClient, addrs: list[str]) -> None:
    """ArealError (with the cause) unless every server answers ``GET /weight_info`` (dev mode)."""
    await _on_all(addrs, lambda a: request(client, a, "GET", "/weight_info"))


class VLLMDiskUpdater:
    """``disk``: every server reloads the HF directory the trainer exported, in place.

    ``push`` returns the bytes of the weight files (the ``lm_head`` shard included when written).
    """

    def __init__(self, meta: WeightUpdateMeta):
        self.meta = meta

    async def connect(self, client: httpx.AsyncClient, addrs: list[str]) -> None:
        await check_rl_endpoints(client, addrs)

    async def push(self, client: httpx.AsyncClient, addrs: list[str], weights: Any, version: int) -> int:
        path = _directory(weights, "config.json", "disk")
        add_tied_lm_head(path)
        body = {"method": "reload_weights", "kwargs": {"weights_path": str(path)}, "timeout": self.meta.timeout_s}
        await _on_all(addrs, lambda a: request(client, a, "POST", "/collective_rpc", body=body, timeout=self.meta.timeout_s))
        await _on_all(addrs, lambda a: request(client, a, "POST", "/reset_prefix_cache"))
        await commit_version(client, addrs, version)
        return _files_bytes(path)

    async def close(self, client: httpx.AsyncClient) -> None:
        """Nothing to release: servers read the shared filesystem."""


class VLLMAdapterUpdater:
    """``adapter``: every server serves the PEFT adapter in ``weights`` as model ``lora_name``.

    ``push`` returns the bytes of the adapter files. :meth:`unload` drops the adapter again
    (requests then go to the base model).
    """

    def __init__(self, meta: WeightUpdateMeta, lora_name: str):
        self.meta, self.lora_name = meta, lora_name

    async def connect(self, client: httpx.AsyncClient, addrs: list[str]) -> None:
        await check_rl_endpoints(client, addrs)

    async def push(self, client: httpx.AsyncClient, addrs: list[str], weights: Any, version: int) -> int:
        path = _directory(weights, "adapter_config.json", "adapter")
        body = {"lora_name": self.lora_name, "lora_path": str(path), "load_inplace": True}
        await _on_all(addrs, lambda a: request(client, a, "POST", "/v1/load_lora_adapter", body=body,
                                               timeout=self.meta.timeout_s))
        await commit_version(client, addrs, version)
        return _files_bytes(path)

    async def unload(self, client: httpx.AsyncClient, addrs: list[str], version: int) -> None:
        """Stop serving the adapter; the base weights serve ``version`` from then on."""
        await _on_all(addrs, lambda a: request(client, a, "POST", "/v1/unload_lora_adapter",
                                               body={"lora_name": self.lora_name}))
        await commit_version(client, addrs, version)

    async def close(self, client: httpx.AsyncClient) -> None:
        """Nothing to release (the adapter stays loaded: it is the served policy)."""
