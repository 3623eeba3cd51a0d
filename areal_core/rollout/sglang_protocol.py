"""Client side of the SGLang native HTTP protocol, shared by every backend whose servers speak it.

One adapter drives a real SGLang server (``python -m sglang.launch_server``) and areal's embedded
server alike. It maps :class:`~areal_core.api.types.ModelRequest` / ``ModelResponse`` to the wire
format (DESIGN.md §4)::

    POST /generate  {"input_ids": [int], "sampling_params": {...}, "return_logprob": true, "stream": false}
      -> {"output_ids": [int],
          "meta_info": {"output_token_logprobs": [[logprob, token_id, null], ...],
                        "finish_reason": {"type": "stop" | "length" | "abort", ...},
                        "weight_version": "3", "prompt_tokens": int, "completion_tokens": int, ...}}
    POST /pause_generation {"mode": "abort"}     in-flight requests return their partial output
    POST /continue_generation
    POST /update_weights_from_disk {"model_path": str, "weight_version": str}
    POST /update_weight_version {"new_version": str}     commits a distributed (broadcast) update
    POST /init_weights_update_group, /update_weights_from_distributed   (see SGLangWeightBroadcaster)
    GET  /health, /get_weight_version

Errors: a server that cannot be reached raises ``httpx.TransportError`` (the caller may retry on
another server); a server that answers with an error status raises :class:`ServerRequestError`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Iterable

from areal_core.api.types import ModelRequest, ModelResponse, SamplingParams, WeightUpdateMeta
from areal_core.errors import ArealError

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
    """The ``/generate`` body for one request (logprobs on, no streaming)."""
    return {
        "input_ids": list(req.input_ids),
        "sampling_params": sampling_payload(req.sampling),
        "return_logprob": True,
        "stream": False,
    }


def parse_weight_version(value: Any) -> int:
    """SGLang reports ``weight_version`` as a string; ``"default"`` (never updated) is version 0."""
    if value is None or value == "default":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ArealError(f"inference server reported weight_version {value!r}, which is not an integer; "
                         "start servers with an integer initial version (e.g. --weight-version 0)") from None


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


async def _post(client: "httpx.AsyncClient", addr: str, endpoint: str, body: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
    kwargs: dict[str, Any] = {"json": body or {}}
    if timeout is not None:
        kwargs["timeout"] = timeout
    resp = await client.post(f"http://{addr}{endpoint}", **kwargs)
    return _checked(resp, addr, endpoint)


def _checked(resp: "httpx.Response", addr: str, endpoint: str) -> Any:
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
    """The :class:`~areal_core.api.protocols.InferenceBackend` wire methods for SGLang-native servers.

    A backend subclasses this and supplies ``server_command``. Methods are stateless: ``client`` is
    an ``httpx.AsyncClient`` owned by the caller, ``addr`` is ``"host:port"``.
    """

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must define server_command")

    async def generate(self, client: "httpx.AsyncClient", addr: str, req: ModelRequest) -> ModelResponse:
        """One ``/generate`` round trip. ``finish_reason == "abort"`` when the server was paused mid-way."""
        if not req.input_ids:
            raise ArealError("ModelRequest.input_ids is empty: a prompt needs at least one token")
        start = time.perf_counter()
        data = await _post(client, addr, "/generate", generate_payload(req))
        return parse_generate_response(req, data, time.perf_counter() - start)

    async def pause(self, client: "httpx.AsyncClient", addr: str) -> None:
        """Abort in-flight requests (they return partial output) and hold new ones until resume."""
        await _post(client, addr, "/pause_generation", {"mode": "abort"})

    async def resume(self, client: "httpx.AsyncClient", addr: str) -> None:
        await _post(client, addr, "/continue_generation")

    async def update_weights(self, client: "httpx.AsyncClient", addr: str, meta: WeightUpdateMeta) -> None:
        """``disk``: load the HF directory ``meta.path`` and set version ``meta.version``.
        ``distributed``: commit version ``meta.version`` after :class:`SGLangWeightBroadcaster` pushed the tensors."""
        if meta.type == "disk":
            if not meta.path:
                raise ArealError("WeightUpdateMeta.path is empty: a disk weight update needs the HF directory to load")
            await _post(client, addr, "/update_weights_from_disk",
                        {"model_path": meta.path, "weight_version": str(meta.version)})
        elif meta.type == "distributed":
            await _post(client, addr, "/update_weight_version", {"new_version": str(meta.version)})
        else:
            raise ArealError(f"WeightUpdateMeta.type {meta.type!r} is not one of 'disk', 'distributed'")

    async def health(self, client: "httpx.AsyncClient", addr: str) -> bool:
        """True when ``GET /health`` answers 200; False when it errors or cannot be reached."""
        import httpx

        try:
            resp = await client.get(f"http://{addr}/health")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


async def get_weight_version(client: "httpx.AsyncClient", addr: str) -> int:
    """The weight version a server reports (``GET /get_weight_version``)."""
    resp = await client.get(f"http://{addr}/get_weight_version")
    return parse_weight_version(_checked(resp, addr, "/get_weight_version")["weight_version"])


class SGLangWeightBroadcaster:
    """Trainer rank 0's side of ``/update_weights_from_distributed``: bucketed broadcast to servers.

    Rank 0 (this process) and every server rank form one process group on its own TCPStore
    (``meta.master_address:meta.master_port``, world size ``1 + len(addrs) * ranks_per_server``),
    independent of the trainer's own groups. Each bucket is one HTTP call per server naming the
    tensors (names, dtypes, shapes), then one broadcast per tensor from rank 0 in that order;
    after the last bucket, ``/update_weight_version`` commits the new version on every server.

    Usage::

        caster = SGLangWeightBroadcaster(addrs, meta)
        await caster.connect(client)
        await caster.push(client, model.named_parameters(), version=step + 1)
    """

    def __init__(self, addrs: list[str], meta: WeightUpdateMeta, ranks_per_server: int = 1):
        if not addrs:
            raise ArealError("SGLangWeightBroadcaster needs at least one server address")
        if not meta.master_port:
            raise ArealError("WeightUpdateMeta.master_port is 0: pick a free port for the weight-sync group")
        self.addrs, self.meta, self.ranks_per_server = list(addrs), meta, ranks_per_server
        self.world_size = 1 + len(addrs) * ranks_per_server
        if meta.world_size and meta.world_size != self.world_size:
            raise ArealError(f"WeightUpdateMeta.world_size is {meta.world_size} but {len(addrs)} servers x "
                             f"{ranks_per_server} ranks + trainer rank 0 make {self.world_size}")
        self.group = None

    async def connect(self, client: "httpx.AsyncClient", timeout_s: float = 120.0) -> None:
        """Create the group: servers join over HTTP while this process joins as rank 0."""
        from areal_core.rollout.weight_transfer import open_weight_group

        requests = [
            _post(client, addr, "/init_weights_update_group", {
                "master_address": self.meta.master_address, "master_port": self.meta.master_port,
                "rank_offset": 1 + i * self.ranks_per_server, "world_size": self.world_size,
                "group_name": self.meta.group_name, "backend": self.meta.backend,
            }, timeout=timeout_s)
            for i, addr in enumerate(self.addrs)
        ]
        own = asyncio.to_thread(open_weight_group, self.meta.master_address, self.meta.master_port,
                                self.world_size, 0, self.meta.backend, timeout_s)
        *_, self.group = await asyncio.gather(*requests, own)

    async def push(self, client: "httpx.AsyncClient", named_tensors: Iterable[tuple[str, "torch.Tensor"]],
                   version: int, timeout_s: float = 600.0) -> int:
        """Broadcast every tensor (bucketed by ``meta.bucket_bytes``, consumed lazily), then set
        ``version`` on every server. Returns the bytes sent."""
        from areal_core.rollout.weight_transfer import broadcast_from_rank0, dtype_name, iter_buckets

        if self.group is None:
            raise ArealError("SGLangWeightBroadcaster.push called before connect()")
        sent = 0
        for bucket in iter_buckets(named_tensors, self.meta.bucket_bytes):
            body = {
                "names": [n for n, _ in bucket],
                "dtypes": [dtype_name(t.dtype) for _, t in bucket],
                "shapes": [list(t.shape) for _, t in bucket],
                "group_name": self.meta.group_name,
            }
            calls = [_post(client, addr, "/update_weights_from_distributed", body, timeout=timeout_s) for addr in self.addrs]
            tensors = [t for _, t in bucket]
            await asyncio.gather(*calls, asyncio.to_thread(broadcast_from_rank0, self.group, tensors))
            sent += sum(t.numel() * t.element_size() for t in tensors)
        await asyncio.gather(*(_post(client, addr, "/update_weight_version", {"new_version": str(version)})
                               for addr in self.addrs))
        return sent

    def close(self) -> None:
        self.group = None
