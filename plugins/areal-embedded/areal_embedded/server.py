"""The HTTP server: SGLang's native API in front of the continuous-batching scheduler.

Run::

    python -m areal_embedded.server --model PATH --host 127.0.0.1 --port 30000 [--max-batch 32]

Endpoints (request and response bodies follow SGLang; see docs/inference-backends.md):
``POST /generate``, ``/pause_generation``, ``/continue_generation``, ``/abort_request``,
``/update_weights_from_disk``, ``/init_weights_update_group``, ``/update_weights_from_distributed``,
``/update_weight_version``, ``/load_lora_adapter``, ``/unload_lora_adapter``, ``/flush_cache``; ``GET /health``, ``/get_weight_version``,
``/get_model_info``, ``/get_server_info``, ``/weights_checksum`` (areal's own: a checksum of the
served parameters, :func:`areal_core.checksum.tensors_checksum`, to verify weight syncs).

LoRA: the server serves one policy, so ``/load_lora_adapter`` merges the PEFT adapter into the
served weights (keeping the base weights: the next adapter replaces it, ``/unload_lora_adapter``
restores the base; see :mod:`areal_embedded.lora`); a disk or distributed update drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from areal_core.plugin import API_KEY_ENV, ArealError, decode_image, image_inputs, image_token_counts
from areal_embedded.cpus import parse_cpus
from areal_embedded.guard import BodyTooLarge, Guard, TransportLimits, guarded_protocol
from areal_embedded.runner import ModelRunner
from areal_embedded.scheduler import Command, Scheduler, Sequence

log = logging.getLogger("areal_embedded")

# SGLang sampling params that only change text formatting: accepted and ignored (we return ids).
IGNORED_SAMPLING = {"skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim"}
# SGLang sampling params this server does not implement: accepted only at their neutral value.
NEUTRAL_SAMPLING: dict[str, tuple[Any, ...]] = {"stop": (None, [], ""), "min_new_tokens": (0, None), "frequency_penalty": (0, 0.0, None),
                    "presence_penalty": (0, 0.0, None), "repetition_penalty": (1, 1.0, None),
                    "min_p": (0, 0.0, None), "regex": (None,), "json_schema": (None,), "ebnf": (None,)}
SUPPORTED_SAMPLING = {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids", "ignore_eos", "n",
                      "sampling_seed", "seed"}


class BadRequest(ArealError):
    """A request the server refuses (HTTP 400), with a message naming the field."""


class Overloaded(ArealError):
    """The server's queue is full (HTTP 503): retry later or on another server."""


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on what one ``/generate`` may ask for (each a server flag)."""

    max_n: int = 64  # --max-n: completions per prompt
    max_new_tokens: int | None = None  # --max-new-tokens: default the model's context length
    max_waiting: int = 4096  # --max-waiting: sequences queued or running before new ones get 503
    max_rid_chars: int = 256


SEED_BOUND = 2**64
TOP_K_BOUND = 2**31 - 1
MIN_TEMPERATURE = 1e-4  # a positive temperature below this would overflow float32 logits / T
MAX_TEMPERATURE = 100.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}, "success": False, "message": message}, status_code=status)


def _int(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"sampling_params.{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"sampling_params.{key}={value} is outside [{low}, {high}]")
    return value


def _float(params: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"sampling_params.{key} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"sampling_params.{key}={value} is outside [{low}, {high}]")
    return float(value)


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"sampling_params.{key} must be true or false, got {value!r}")
    return value


def parse_sampling(params: Any, vocab_size: int, max_len: int, limits: RequestLimits = RequestLimits()) -> dict[str, Any]:
    """Validate SGLang ``sampling_params``; returns the ones the scheduler uses. Every field is
    type- and range-checked here, so a bad value fails its own request (400), never the batch."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest(f"sampling_params must be an object, got {type(params).__name__}")
    for key in params:
        if key in IGNORED_SAMPLING or key in SUPPORTED_SAMPLING:
            continue
        if key in NEUTRAL_SAMPLING:
            if params[key] not in NEUTRAL_SAMPLING[key]:
                raise BadRequest(f"sampling_params.{key}={params[key]!r} is not supported by the embedded server")
            continue
        raise BadRequest(f"unknown sampling_params.{key}; supported: {', '.join(sorted(SUPPORTED_SAMPLING))}")
    max_new = limits.max_new_tokens or max_len
    temperature = _float(params, "temperature", 1.0, 0.0, MAX_TEMPERATURE)
    if 0 < temperature < MIN_TEMPERATURE:
        raise BadRequest(f"sampling_params.temperature={temperature} is below {MIN_TEMPERATURE}; use 0 for greedy")
    top_k = _int(params, "top_k", -1, -1, TOP_K_BOUND)
    if top_k == 0:
        raise BadRequest("sampling_params.top_k must be -1 (off) or >= 1, got 0")
    stop_ids = params.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or len(stop_ids) > vocab_size or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in stop_ids):
        raise BadRequest(f"sampling_params.stop_token_ids must be a list of at most {vocab_size} integers")
    bad = [t for t in stop_ids if not 0 <= t < vocab_size]
    if bad:
        raise BadRequest(f"sampling_params.stop_token_ids {bad[:5]} are outside the vocabulary [0, {vocab_size})")
    top_p = _float(params, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise BadRequest("sampling_params.top_p must be in (0, 1], got 0")
    seed_key = "sampling_seed" if params.get("sampling_seed") is not None else "seed"
    return {
        "max_new_tokens": _int(params, "max_new_tokens", min(128, max_new), 0, max_new),
        "temperature": temperature,
        "top_p": top_p,
        "top_k": min(top_k, vocab_size),
        "stop_token_ids": stop_ids,
        "ignore_eos": _bool(params, "ignore_eos"),
        "n": _int(params, "n", 1, 1, limits.max_n),
        "seed": _int(params, seed_key, None, -SEED_BOUND + 1, SEED_BOUND - 1),  # type: ignore[arg-type]
    }


def _parse_version(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"{field} must be an integer (as a string or number), got {value!r}")
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{field} must be an integer (as a string or number), got {value!r}") from None
    if version < 0:
        raise BadRequest(f"{field} must be >= 0, got {version}")
    return version


class EmbeddedServer:
    """Request parsing and answers; the scheduler thread does the model work."""

    def __init__(self, runner: ModelRunner, scheduler: Scheduler, seed: int, tokenizer=None,
                 limits: RequestLimits = RequestLimits()):
        self.runner, self.scheduler, self.tokenizer, self.limits = runner, scheduler, tokenizer, limits
        self.rng = random.Random(seed)
        self.groups: dict[str, Any] = {}
        # distributed updates: tensors received per group, copied in only when a version commits
        self.staged: dict[str, list[tuple[str, torch.Tensor]]] = {}
        self.poisoned: dict[str, str] = {}  # group -> why its staged update must not commit
        self.lora_name: str | None = None  # the adapter merged into the served weights, if any

    async def generate(self, body: dict[str, Any], disconnected: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Answer one ``/generate``; if ``disconnected()`` turns true first, abort its sequences."""
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the embedded server")
        prompts, single = self._prompts(body)
        media = self._media(body.get("image_data"), prompts)
        sampling = parse_sampling(body.get("sampling_params"), self.runner.vocab_size, self.runner.max_len, self.limits)
        count = len(prompts) * sampling["n"]
        queued = self.scheduler.load()
        if queued + count > self.limits.max_waiting:
            raise Overloaded(f"server busy: {queued} sequences queued or running, this request adds {count} "
                             f"(limit --max-waiting {self.limits.max_waiting}); retry later")
        rid = body.get("rid")
        if rid is not None and (not isinstance(rid, str) or len(rid) > self.limits.max_rid_chars):
            raise BadRequest(f"rid must be a string of at most {self.limits.max_rid_chars} characters")
        stop_ids = set(sampling["stop_token_ids"])
        if not sampling["ignore_eos"]:
            stop_ids |= self.runner.eos_token_ids
        loop = asyncio.get_running_loop()
        futures, sequences = [], []
        base_rid = rid or uuid.uuid4().hex
        for p, prompt in enumerate(prompts):
            if len(prompt) >= self.runner.max_len:
                raise BadRequest(f"input_ids has {len(prompt)} tokens; the model's context is {self.runner.max_len}")
            for i in range(sampling["n"]):
                seed = (sampling["seed"] + i) % SEED_BOUND if sampling["seed"] is not None else self.rng.getrandbits(63)
                future = loop.create_future()
                sequences.append(Sequence(
                    rid=base_rid if len(prompts) * sampling["n"] == 1 else f"{base_rid}-{p}-{i}",
                    prompt=prompt,
                    max_new_tokens=min(sampling["max_new_tokens"], self.runner.max_len - len(prompt)),
                    temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
                    stop_ids=frozenset(stop_ids), rng=random.Random(seed),
                    on_done=functools.partial(_settle_from_thread, loop, future), media=media,
                ))
                futures.append(future)
        self.scheduler.submit(sequences)
        gathered = asyncio.gather(*futures)
        mine = set(map(id, sequences))
        while disconnected is not None and not (await asyncio.wait({gathered}, timeout=1.0))[0]:
            if await disconnected():
                await self.control(Command("abort", targets=lambda s: id(s) in mine))
                break
        results = await gathered
        for result in results:
            result["text"] = self.tokenizer.decode(result["output_ids"], skip_special_tokens=True) if self.tokenizer else ""
            if not body.get("return_logprob"):
                result["meta_info"].pop("output_token_logprobs")
        return results[0] if single and len(results) == 1 else results

    def _prompts(self, body: dict[str, Any]) -> tuple[list[list[int]], bool]:
        ids = body.get("input_ids")
        if ids is None and body.get("text") is not None:
            if self.tokenizer is None:
                raise BadRequest("text input needs a tokenizer in the model directory; send input_ids")
            texts = body["text"] if isinstance(body["text"], list) else [body["text"]]
            return [self.tokenizer.encode(t) for t in texts], not isinstance(body["text"], list)
        if not isinstance(ids, list) or not ids:
            raise BadRequest("input_ids must be a non-empty list of token ids (or a list of such lists)")
        single = not isinstance(ids[0], list)
        prompts = [ids] if single else ids
        for prompt in prompts:
            if not isinstance(prompt, list) or not prompt or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.runner.vocab_size for t in prompt):
                raise BadRequest(f"input_ids must be non-empty lists of integers in [0, {self.runner.vocab_size})")
        return prompts, single

    def _media(self, image_data: Any, prompts: list[list[int]]) -> dict[str, Any]:
        """The model inputs of ``image_data`` (a list of base64 image strings, or one) for the one
        prompt of this request; ``{}`` without images. The prompt must hold exactly the image
        placeholder tokens the processor gives these images."""
        if image_data is None or image_data == []:
            return {}
        if self.runner.image_processor is None or self.runner.image_token_id is None:
            raise BadRequest(f"image_data given, but model {self.runner.model_path!r} is not a vision-language model")
        if len(prompts) != 1:
            raise BadRequest("image_data is supported for a single prompt per request")
        images = image_data if isinstance(image_data, list) else [image_data]
        try:
            pictures = [decode_image(d, f"image_data[{i}]") for i, d in enumerate(images)]
        except ArealError as exc:
            raise BadRequest(str(exc)) from None
        inputs = image_inputs(self.runner.image_processor, pictures)
        expected = sum(image_token_counts(self.runner.image_processor, inputs))
        found = prompts[0].count(self.runner.image_token_id)
        if found != expected:
            raise BadRequest(f"input_ids hold {found} image tokens (id {self.runner.image_token_id}); its "
                             f"{len(images)} image(s) need {expected}")
        return inputs

    async def control(self, command: Command) -> Any:
        return await asyncio.wrap_future(self.scheduler.command(command))

    async def update_from_disk(self, body: dict[str, Any]) -> dict[str, Any]:
        """Load an HF directory all-or-nothing (:meth:`ModelRunner.load_from_disk`) and move the
        version forward; on any failure the served weights and version stay as they were."""
        path = body.get("model_path")
        if not isinstance(path, str) or not path:
            raise BadRequest("update_weights_from_disk needs model_path (a directory)")
        requested = body.get("weight_version")

        def run():
            version = self._next_version(requested)
            count = self.runner.load_from_disk(path)
            self.scheduler.version, self.lora_name = version, None
            return count, version

        count, version = await self.control(Command("update_weights_from_disk", run, exclusive=True,
                                                    abort_running=bool(body.get("abort_all_requests", False))))
        return {"success": True, "message": f"loaded {count} tensors from {path}; weight_version {version}",
                "num_paused_requests": 0}

    async def load_adapter(self, body: dict[str, Any]) -> dict[str, Any]:
        """Serve base weights + the PEFT LoRA adapter in directory ``lora_path`` (SGLang's body:
        ``lora_name``, ``lora_path``); it replaces any adapter loaded before. areal's extension:
        ``weight_version`` sets the version in the same step (it only moves forward). The adapter
        is read and checked off the model thread; a bad one leaves weights and version as they were."""
        from areal_embedded.lora import read_adapter_deltas

        path, name = body.get("lora_path"), body.get("lora_name", "default")
        if not isinstance(path, str) or not path:
            raise BadRequest("load_lora_adapter needs lora_path (a PEFT adapter directory)")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"load_lora_adapter: lora_name must be a non-empty string, got {name!r}")
        deltas = await asyncio.to_thread(read_adapter_deltas, path)
        self.runner.check_adapter(deltas)
        requested = body.get("weight_version")

        def run():
            version = self.scheduler.version if requested is None else self._next_version(requested)
            count = self.runner.load_adapter(deltas)
            self.scheduler.version, self.lora_name = version, name
            return count, version

        count, version = await self.control(Command("load_lora_adapter", run, exclusive=True,
                                                    abort_running=bool(body.get("abort_all_requests", False))))
        return {"success": True, "message": f"adapter {name!r} from {path}: {count} layers merged; "
                                            f"weight_version {version}"}

    async def unload_adapter(self, body: dict[str, Any]) -> dict[str, Any]:
        """Serve the base weights again (``lora_name`` must name the loaded adapter)."""
        name = body.get("lora_name")
        if self.lora_name is None or name != self.lora_name:
            raise BadRequest(f"unload_lora_adapter: no adapter {name!r} is loaded"
                             + (f" (the loaded one is {self.lora_name!r})" if self.lora_name else ""))

        def run():
            self.runner.unload_adapter()
            self.lora_name = None

        await self.control(Command("unload_lora_adapter", run, exclusive=True))
        return {"success": True, "message": f"adapter {name!r} unloaded; serving the base weights"}

    async def init_group(self, body: dict[str, Any]) -> dict[str, Any]:
        from areal_sglang.weight_transfer import open_weight_group

        missing = [k for k in ("master_address", "master_port", "rank_offset", "world_size") if k not in body]
        if missing:
            raise BadRequest(f"init_weights_update_group lacks {missing}")
        name = body.get("group_name", "areal_weights")
        backend = body.get("backend", "nccl" if self.runner.device.type == "cuda" else "gloo")
        self.groups[name] = await asyncio.to_thread(
            open_weight_group, body["master_address"], int(body["master_port"]), int(body["world_size"]),
            int(body["rank_offset"]), backend, float(body.get("timeout_s", 120.0)))
        self.staged.pop(name, None)
        self.poisoned.pop(name, None)
        return {"success": True, "message": f"joined weight group {name!r} as rank {body['rank_offset']}"}

    async def update_from_distributed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Receive one bucket of tensors into fresh buffers and stage them; they replace the live
        weights only when a version commits (``weight_version`` here, or ``/update_weight_version``).

        Names, shapes and dtypes are checked against the model before receiving. A bad bucket is
        still received (the trainer's broadcast must complete) but discarded, and the group's
        update is refused at commit: the served weights never mix two versions."""
        from areal_sglang.weight_transfer import broadcast_from_rank0, dtype_from_name

        name = body.get("group_name", "areal_weights")
        group = self.groups.get(name)
        if group is None:
            raise BadRequest(f"no weight group {name!r}: call /init_weights_update_group first")
        names, dtypes, shapes = body.get("names") or [], body.get("dtypes") or [], body.get("shapes") or []
        if not (len(names) == len(dtypes) == len(shapes)):
            raise BadRequest(f"names, dtypes, shapes differ in length ({len(names)}, {len(dtypes)}, {len(shapes)})")
        torch_dtypes = [dtype_from_name(d) for d in dtypes]
        shapes = [tuple(int(x) for x in shape) for shape in shapes]
        numel = sum(math.prod(shape) for shape in shapes)
        if numel > 2 * sum(t.numel() for t in self.runner.named_tensors().values()):
            raise BadRequest(f"update_weights_from_distributed announces {numel} elements, more than twice the model")
        problem = None
        try:
            for tensor_name, shape, dtype in zip(names, shapes, torch_dtypes):
                self.runner.check_tensor(tensor_name, shape, dtype)
        except ArealError as exc:
            problem = str(exc)
        requested = body.get("weight_version")
        device = self.runner.device if self.runner.device.type == "cuda" else torch.device("cpu")

        def receive():
            buffers = [torch.empty(shape, dtype=dtype, device=device) for dtype, shape in zip(torch_dtypes, shapes)]
            broadcast_from_rank0(group, buffers)
            return buffers

        buffers = await asyncio.to_thread(receive)  # the model thread keeps serving meanwhile
        if problem is not None:
            self.poisoned[name] = problem
            self.staged.pop(name, None)
            raise BadRequest(f"update_weights_from_distributed refused (weights unchanged): {problem}")
        if name not in self.poisoned:
            self.staged.setdefault(name, []).extend(self.runner.stage(zip(names, buffers)))
        if requested is not None:
            return await self._commit(requested, name, bool(body.get("abort_all_requests", False)))
        return {"success": True, "message": f"received and staged {len(buffers)} tensors"}

    async def set_version(self, body: dict[str, Any]) -> dict[str, Any]:
        """Commit: apply the staged distributed update (if any) and set the version, in one step."""
        return await self._commit(body.get("new_version"), body.get("group_name"),
                                  bool(body.get("abort_all_requests", False)))

    async def _commit(self, requested: Any, group: str | None, abort_running: bool) -> dict[str, Any]:
        version = _parse_version(requested, "new_version")
        groups = [group] if group else sorted(set(self.staged) | set(self.poisoned))
        problems = [f"{g}: {self.poisoned.pop(g)}" for g in groups if g in self.poisoned]
        staged = [pair for g in groups for pair in self.staged.pop(g, [])]
        if problems:
            raise BadRequest(f"weight_version {version} not committed (weights unchanged): an earlier bucket was "
                             f"refused ({'; '.join(problems)})")

        def run():
            self._check_forward(version)
            count = self.runner.commit(staged)
            self.scheduler.version = version
            if staged:
                self.lora_name = None
            return count

        count = await self.control(Command("update_weight_version", run, exclusive=True, abort_running=abort_running))
        return {"success": True, "message": f"weight_version {version} ({count} staged tensors applied)"}

    async def weights_checksum(self) -> dict[str, Any]:
        """Checksum of the model's parameters and the version they belong to. Read outside the
        model thread (weights change only in exclusive update commands); a version change during
        the read means an update overlapped it, so the read is repeated."""
        from areal_core.plugin import tensors_checksum

        while True:
            version = self.scheduler.version
            checksum = await asyncio.to_thread(tensors_checksum, self.runner.checkpoint_parameters())
            if self.scheduler.version == version:
                return {"checksum": checksum, "weight_version": str(version)}

    def _next_version(self, requested: Any) -> int:
        """The version an update sets: ``requested``, or the current one + 1; never backwards."""
        version = self.scheduler.version + 1 if requested is None else _parse_version(requested, "weight_version")
        self._check_forward(version)
        return version

    def _check_forward(self, version: int) -> None:
        if version < self.scheduler.version:
            raise BadRequest(f"weight_version {version} is older than the served version {self.scheduler.version}: "
                             f"versions only move forward")

    def info(self) -> dict[str, Any]:
        return {
            "model_path": self.runner.model_path, "tokenizer_path": self.runner.model_path, "is_generation": True,
            "weight_version": str(self.scheduler.version), "device": str(self.runner.device), "lora_name": self.lora_name,
            "dtype": str(self.runner.dtype).removeprefix("torch."), "max_batch": self.scheduler.max_batch,
            "max_len": self.runner.max_len, "paused": self.scheduler.paused,
            "running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
            "decode_steps": self.scheduler.steps,
        }


def _settle_from_thread(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any) -> None:
    """``Sequence.on_done``: settle ``future`` on its event loop (called from the scheduler thread)."""
    loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def build_app(server: EmbeddedServer) -> FastAPI:
    app = FastAPI(title="areal embedded inference server")

    async def answer(coro) -> Any:
        try:
            return await coro
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        except Overloaded as exc:
            return _error(503, str(exc))
        except (BadRequest, ArealError, ValueError) as exc:
            return _error(400, str(exc))
        except Exception as exc:  # the caller sees the reason
            log.exception("request failed")
            return _error(500, f"{type(exc).__name__}: {exc}")

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        data = await request.json()
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    async def with_body(request: Request, handler) -> Any:
        async def run():
            return await handler(await body_of(request))

        return await answer(run())

    @app.post("/generate")
    async def generate(request: Request):
        return await with_body(request, lambda body: server.generate(body, request.is_disconnected))

    @app.post("/pause_generation")
    async def pause(request: Request):
        async def run(body):
            if body.get("mode", "abort") != "abort":
                raise BadRequest(f"pause mode {body['mode']!r} is not supported; the embedded server pauses by abort")
            await server.control(Command("pause"))
            return {"message": "generation paused; in-flight requests aborted"}

        return await with_body(request, run)

    @app.post("/continue_generation")
    async def resume(request: Request):
        async def run(body):
            await server.control(Command("continue"))
            return {"message": "generation continued"}

        return await with_body(request, run)

    @app.post("/abort_request")
    async def abort(request: Request):
        async def run(body):
            rid = body.get("rid")
            if rid is None and not body.get("abort_all"):
                raise BadRequest("abort_request needs rid or abort_all=true")
            targets = None if body.get("abort_all") else (lambda s: s.rid == rid or s.rid.startswith(f"{rid}-"))
            await server.control(Command("abort", targets=targets))
            return {"success": True}

        return await with_body(request, run)

    def body_route(path: str, handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        async def route(request: Request):
            return await with_body(request, handler)

        app.post(path, name=path.strip("/"))(route)

    for path, handler in {"/update_weights_from_disk": server.update_from_disk, "/init_weights_update_group": server.init_group,
                          "/update_weights_from_distributed": server.update_from_distributed,
                          "/update_weight_version": server.set_version, "/load_lora_adapter": server.load_adapter,
                          "/unload_lora_adapter": server.unload_adapter}.items():
        body_route(path, handler)

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache():
        return {"success": True, "message": "no prefix cache to flush"}

    @app.get("/health")
    async def health():
        return JSONResponse({}, status_code=200 if server.scheduler.alive else 503)

    @app.get("/get_weight_version")
    async def weight_version():
        return {"weight_version": str(server.scheduler.version)}

    @app.get("/weights_checksum")
    async def weights_checksum():
        return await answer(server.weights_checksum())

    @app.get("/get_model_info")
    async def model_info():
        return server.info()

    @app.get("/get_server_info")
    async def server_info():
        return server.info()

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("areal_embedded.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local Hugging Face model directory or hub id (org/name, "
                        "from the Hugging Face cache)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together")
    parser.add_argument("--max-prefill-tokens", type=int, default=8192, help="padded tokens per batched prefill")
    parser.add_argument("--max-len", type=int, default=None, help="context length cap (default: the model's)")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--seed", type=int, default=0, help="seeds requests that carry no sampling_seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cpus", default=None, help="comma-separated CPU core ids to pin the server to, or auto:K (the first K cores "
                        "this process may use, when more are left; default: no pinning)")
    parser.add_argument("--weight-version", type=int, default=0, help="initial weight version")
    parser.add_argument("--log-level", default="warning")
    limits = parser.add_argument_group("limits (see docs/operations.md)")
    limits.add_argument("--api-key", default=None,
                        help=f"bearer token every request must carry (default: ${API_KEY_ENV}; prefer the variable: "
                             "argv is visible to every user of the node); none set: no authentication")
    limits.add_argument("--max-n", type=int, default=RequestLimits.max_n, help="most completions per prompt (n)")
    limits.add_argument("--max-new-tokens", type=int, default=None, help="largest max_new_tokens (default: context)")
    limits.add_argument("--max-waiting", type=int, default=RequestLimits.max_waiting,
                        help="sequences queued or running beyond which new requests get 503")
    limits.add_argument("--max-body-mb", type=float, default=TransportLimits.max_body_bytes / 2**20,
                        help="largest request body (413 beyond)")
    limits.add_argument("--max-connections", type=int, default=TransportLimits.max_connections,
                        help="open connections beyond which new ones are closed at once")
    limits.add_argument("--request-timeout-s", type=float, default=TransportLimits.request_timeout_s,
                        help="a connection must deliver a whole request within this time")
    limits.add_argument("--keep-alive-s", type=int, default=TransportLimits.keep_alive_s,
                        help="idle keep-alive connections close after this")
    return parser.parse_args(argv)


def pin_to_cpus(spec: str) -> set[int] | None:
    """Pin every thread of this process to the cores of ``spec`` ("0,2", or "auto:K": see
    :mod:`areal_embedded.cpus`), which may lie outside the cores it inherited; threads started later
    inherit it. Returns the cores, or None when ``auto`` found no core to spare (nothing pinned).
    Raises :class:`ArealError` naming the cores that cannot be used."""
    cpus = parse_cpus(spec)
    if cpus is None:
        log.info("--cpus %s: too few cores to keep one for the trainer; not pinned", spec)
        return None
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError as exc:  # a core that does not exist or that this container may not use
            raise ArealError(f"--cpus {spec!r}: cannot pin to cores {sorted(cpus)} ({exc.strerror}); this machine has "
                             f"{os.cpu_count()} cores") from None
    return cpus


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cpus:
        pin_to_cpus(args.cpus)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = ModelRunner(args.model, max_rows=args.max_batch, device=args.device, dtype=args.dtype, max_len=args.max_len)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(runner.model_path)
    except Exception:  # noqa: BLE001 - a model directory without a tokenizer still serves input_ids
        tokenizer = None
    scheduler = Scheduler(runner, args.max_batch, args.max_prefill_tokens, version=args.weight_version)
    scheduler.start()
    server = EmbeddedServer(runner, scheduler, args.seed, tokenizer,
                            RequestLimits(args.max_n, args.max_new_tokens, args.max_waiting))
    transport = TransportLimits(int(args.max_body_mb * 2**20), args.max_connections, args.request_timeout_s,
                                args.keep_alive_s)
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    log.warning("serving %s on %s:%d (%s, %s, max batch %d, %s)", args.model, args.host, args.port, runner.device,
                runner.dtype, args.max_batch, "bearer token required" if key else "NO AUTHENTICATION")
    if key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without an API key: anyone who can reach it can replace its weights "
                    "(set %s)", args.host, API_KEY_ENV)
    try:
        uvicorn.run(Guard(build_app(server), key, transport.max_body_bytes), host=args.host, port=args.port,
                    log_level=args.log_level, http=guarded_protocol(transport), limit_concurrency=transport.max_connections,
                    timeout_keep_alive=transport.keep_alive_s, h11_max_incomplete_event_size=transport.max_header_bytes)
    finally:
        scheduler.stop()


if __name__ == "__main__":
    main()
