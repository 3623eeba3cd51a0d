"""Client side of the SGLang native HTTP protocol, shared by every backend whose servers speak it.

One adapter drives a real SGLang server (``python -m sglang.launch_server``) and areal's embedded
server alike (areal-embedded depends on this package for it). It maps
:class:`~areal_core.plugin.ModelRequest` / ``ModelResponse`` to the wire format (DESIGN.md §4)
and carries new weights over two paths, each a :class:`~areal_core.plugin.WeightUpdater`
(:meth:`SGLangProtocol.weight_updater`)::

    POST /generate  {"input_ids": [int], "sampling_params": {...}, "return_logprob": true, "stream": false}
      -> {"output_ids": [int],
          "meta_info": {"output_token_logprobs": [[logprob, token_id, null], ...],
                        "finish_reason": {"type": "stop" | "length" | "abort", ...},
                        "weight_version": "3", "prompt_tokens": int, "completion_tokens": int, ...}}
    POST /pause_generation {"mode": "abort"}     in-flight requests return their partial output
    POST /continue_generation
    POST /update_weights_from_disk {"model_path": str, "weight_version": str}
    POST /update_weight_version {"new_version": str}     commits a distributed (broadcast) update
    POST /init_weights_update_group, /update_weights_from_distributed   (see SGLangBroadcastUpdater)
    GET  /health, /get_weight_version

    disk         SGLangDiskUpdater        /update_weights_from_disk (load + set version in one call)
    distributed  SGLangBroadcastUpdater   bucketed broadcast over a process group, then
                                          /update_weight_version commits the version

Errors: a server that cannot be reached raises ``httpx.TransportError`` (the caller may retry on
another server); a server that answers with an error status raises :class:`ServerRequestError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from areal_core.plugin import (
    ArealError,
    ModelRequest,
    ModelResponse,
    SamplingParams,
    WeightUpdateMeta,
    WeightUpdater,
    parse_weight_version,
)

if TYPE_CHECKING:
    import httpx
    import torch

FINISH_REASONS = ("stop", "length", "abort")


class ServerRequestError(ArealError):
    """An inference server answered a request with an error status (or ``success: false``)."""

    def __init__(self, addr: str, endpoint: str, status_code: int, detail: str):
        self.addr, self.endpoint, self.status_code, self.detail = addr, endpoint, status_code, detail
        super().__init__(f"inference server {addr} rejected POST/GET {endpoint} (HTTP {status_code}): {detail}")


def sampling_payload(sampling: SamplingParams) -> dict[str, Any]:
    """SGLang ``sampling_params`` for one completion. ``seed`` travels as SGLang's ``sampling_seed``."""
    payload: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "stop_token_ids": list(sampling.stop_token_ids),
        "ignore_eos": sampling.ignore_eos,
    }
    if sampling.seed is not None:
        payload["sampling_seed"] = sampling.seed
    return payload


def generate_payload(req: ModelRequest) -> dict[str, Any]:
    """The ``/generate`` body for one request (logprobs on, no streaming; ``image_data`` when
    the prompt has images)."""
    payload: dict[str, Any] = {
        "input_ids": list(req.input_ids),
        "sampling_params": sampling_payload(req.sampling),
        "return_logprob": True,
        "stream": False,
    }
    if req.image_data:
        payload["image_data"] = list(req.image_data)
    return payload


def parse_generate_response(req: ModelRequest, data: Any, latency_s: float) -> ModelResponse:
    """Map one ``/generate`` response body to a :class:`ModelResponse` (one version for all tokens)."""
    if isinstance(data, list):  # a batched answer; one request gives a list of one
        if len(data) != 1:
            raise ArealError(f"/generate returned {len(data)} completions for one request")
        data = data[0]
    try:
        meta = data["meta_info"]
        logprob_triples = meta["output_token_logprobs"] or []
        finish = meta["finish_reason"]
    except (KeyError, TypeError) as exc:
        raise ArealError(f"/generate response lacks {exc} (was return_logprob honoured?): {str(data)[:300]}") from None
    logprobs = [float(t[0]) for t in logprob_triples]
    output_ids = list(data.get("output_ids") or [int(t[1]) for t in logprob_triples])
    if len(output_ids) != len(logprobs):
        raise ArealError(f"/generate returned {len(output_ids)} output_ids but {len(logprobs)} logprobs")
    reason = finish.get("type") if isinstance(finish, dict) else finish
    if reason not in FINISH_REASONS:
        raise ArealError(f"/generate returned finish_reason {finish!r}; expected one of {FINISH_REASONS}")
    version = parse_weight_version(meta.get("weight_version"))
    return ModelResponse(
        input_ids=list(req.input_ids),
        output_ids=output_ids,
        output_logprobs=logprobs,
        output_versions=[version] * len(output_ids),
        finish_reason=reason,
        latency_s=latency_s,
    )


async def post(client: httpx.AsyncClient, addr: str, endpoint: str, body: dict[str, Any] | None = None,
               timeout: float | None = None) -> Any:
    """POST ``body`` as JSON to ``addr``; the answer's JSON, or ServerRequestError on an error status."""
    kwargs: dict[str, Any] = {"json": body or {}}
    if timeout is not None:
        kwargs["timeout"] = timeout
    resp = await client.post(f"http://{addr}{endpoint}", **kwargs)
    return _checked(resp, addr, endpoint)


def _checked(resp: httpx.Response, addr: str, endpoint: str) -> Any:
    if resp.status_code != 200:
        raise ServerRequestError(addr, endpoint, resp.status_code, resp.text[:1000])
    try:
        data = resp.json()
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("success") is False:
        raise ServerRequestError(addr, endpoint, resp.status_code, str(data.get("message", data))[:1000])
    return data


class SGLangProtocol:
    """The :class:`~areal_core.plugin.InferenceBackend` methods for SGLang-native servers.

    A backend subclasses this and supplies ``server_command``. Methods are stateless: ``client`` is
    an ``httpx.AsyncClient`` owned by the caller, ``addr`` is ``"host:port"``.
    """

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must define server_command")

    async def generate(self, client: httpx.AsyncClient, addr: str, req: ModelRequest) -> ModelResponse:
        """One ``/generate`` round trip. ``finish_reason == "abort"`` when the server was paused mid-way."""
        if not req.input_ids:
            raise ArealError("ModelRequest.input_ids is empty: a prompt needs at least one token")
        start = time.perf_counter()
        data = await post(client, addr, "/generate", generate_payload(req))
        return parse_generate_response(req, data, time.perf_counter() - start)

    async def pause(self, client: httpx.AsyncClient, addr: str) -> None:
        """Abort in-flight requests (they return partial output) and hold new ones until resume."""
        await post(client, addr, "/pause_generation", {"mode": "abort"})

    async def resume(self, client: httpx.AsyncClient, addr: str) -> None:
        await post(client, addr, "/continue_generation")

    async def health(self, client: httpx.AsyncClient, addr: str) -> bool:
        """True when ``GET /health`` answers 200; False when it errors or cannot be reached."""
        import httpx

        try:
            resp = await client.get(f"http://{addr}/health")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def weight_updater(self, meta: WeightUpdateMeta) -> WeightUpdater:
        """``disk`` and ``distributed`` (SGLang's native paths); anything else is an ArealError."""
        if meta.type == "disk":
            return SGLangDiskUpdater(meta)
        if meta.type == "distributed":
            return SGLangBroadcastUpdater(meta)
        raise ArealError(f"weight_sync.type={meta.type!r}: {type(self).__name__} supports 'disk' and 'distributed'")


class SGLangDiskUpdater:
    """``disk`` path: every server loads the HF directory the trainer exported and takes its version
    in the same call (``/update_weights_from_disk``). ``push`` returns the bytes of the weight files."""

    def __init__(self, meta: WeightUpdateMeta):
        self.meta = meta

    async def connect(self, client: httpx.AsyncClient, addrs: list[str]) -> None:
        """Nothing to prepare: servers read the shared filesystem."""

    async def push(self, client: httpx.AsyncClient, addrs: list[str], weights: Any, version: int) -> int:
        from pathlib import Path

        if not isinstance(weights, str) or not weights:
            raise ArealError(f"disk weight update needs the HF directory to load (got {type(weights).__name__})")
        body = {"model_path": weights, "weight_version": str(version)}
        await asyncio.gather(*(post(client, addr, "/update_weights_from_disk", body, timeout=self.meta.timeout_s)
                               for addr in addrs))
        return sum(f.stat().st_size for f in Path(weights).glob("*.safetensors"))

    async def close(self, client: httpx.AsyncClient) -> None:
        """Nothing to release."""


async def get_weight_version(client: httpx.AsyncClient, addr: str) -> int:
    """The weight version a server reports (``GET /get_weight_version``)."""
    resp = await client.get(f"http://{addr}/get_weight_version")
    return parse_weight_version(_checked(resp, addr, "/get_weight_version")["weight_version"])


class SGLangBroadcastUpdater:
    """``distributed`` path: trainer rank 0's side of ``/update_weights_from_distributed``.

    Rank 0 (this process) and every server rank form one process group on its own TCPStore
    (``meta.master_address:meta.master_port``, world size ``1 + len(addrs) * ranks_per_server``),
    independent of the trainer's own groups. Each bucket is one HTTP call per server naming the
    tensors (names, dtypes, shapes), then one broadcast per tensor from rank 0 in that order;
    after the last bucket, ``/update_weight_version`` commits the new version on every server.
    """

    def __init__(self, meta: WeightUpdateMeta, ranks_per_server: int = 1):
        if not meta.master_port:
            raise ArealError("WeightUpdateMeta.master_port is 0: pick a free port for the weight-sync group")
        self.meta, self.ranks_per_server = meta, ranks_per_server
        self.group = None

    def _world_size(self, addrs: list[str]) -> int:
        if not addrs:
            raise ArealError("the distributed weight update needs at least one server address")
        world = 1 + len(addrs) * self.ranks_per_server
        if self.meta.world_size and self.meta.world_size != world:
            raise ArealError(f"WeightUpdateMeta.world_size is {self.meta.world_size} but {len(addrs)} servers x "
                             f"{self.ranks_per_server} ranks + trainer rank 0 make {world}")
        return world

    async def connect(self, client: httpx.AsyncClient, addrs: list[str], timeout_s: float = 120.0) -> None:
        """Create the group: servers join over HTTP while this process joins as rank 0."""
        from areal_sglang.weight_transfer import open_weight_group

        world = self._world_size(addrs)
        requests = [
            post(client, addr, "/init_weights_update_group", {
                "master_address": self.meta.master_address, "master_port": self.meta.master_port,
                "rank_offset": 1 + i * self.ranks_per_server, "world_size": world,
                "group_name": self.meta.group_name, "backend": self.meta.backend,
            }, timeout=timeout_s)
            for i, addr in enumerate(addrs)
        ]
        own = asyncio.to_thread(open_weight_group, self.meta.master_address, self.meta.master_port,
                                world, 0, self.meta.backend, timeout_s)
        *_, self.group = await asyncio.gather(*requests, own)

    async def push(self, client: httpx.AsyncClient, addrs: list[str],
                   weights: str | Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """Broadcast every tensor (bucketed by ``meta.bucket_bytes``, consumed lazily), then set
        ``version`` on every server. Returns the bytes sent."""
        from areal_sglang.weight_transfer import broadcast_from_rank0, dtype_name, iter_buckets

        if isinstance(weights, str):
            raise ArealError(f"distributed weight update streams (name, tensor) pairs, not a directory ({weights!r})")
        if self.group is None:
            raise ArealError("SGLangBroadcastUpdater.push called before connect()")
        sent = 0
        for bucket in iter_buckets(weights, self.meta.bucket_bytes):
            body = {
                "names": [n for n, _ in bucket],
                "dtypes": [dtype_name(t.dtype) for _, t in bucket],
                "shapes": [list(t.shape) for _, t in bucket],
                "group_name": self.meta.group_name,
            }
            calls = [post(client, addr, "/update_weights_from_distributed", body, timeout=self.meta.timeout_s)
                     for addr in addrs]
            tensors = [t for _, t in bucket]
            await asyncio.gather(*calls, asyncio.to_thread(broadcast_from_rank0, self.group, tensors))
            sent += sum(t.numel() * t.element_size() for t in tensors)
        await asyncio.gather(*(post(client, addr, "/update_weight_version", {"new_version": str(version)})
                               for addr in addrs))
        return sent

    async def close(self, client: httpx.AsyncClient) -> None:
        self.group = None
