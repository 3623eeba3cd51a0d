"""The HTTP server: SGLang's native API in front of the continuous-batching scheduler.

Run::

    python -m areal_embedded.server --model PATH --host 127.0.0.1 --port 30000 [--max-batch 32]

Endpoints (request and response bodies follow SGLang; see docs/inference-backends.md):
``POST /generate``, ``/pause_generation``, ``/continue_generation``, ``/abort_request``,
``/update_weights_from_disk``, ``/init_weights_update_group``, ``/update_weights_from_distributed``,
``/update_weight_version``, ``/flush_cache``; ``GET /health``, ``/get_weight_version``,
``/get_model_info``, ``/get_server_info``, ``/weights_checksum`` (areal's own: a checksum of the
served parameters, :func:`areal_core.checksum.tensors_checksum`, to verify weight syncs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import uuid
from typing import Any, Awaitable, Callable

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from areal_core.plugin import ArealError
from areal_embedded.runner import ModelRunner
from areal_embedded.scheduler import Command, Scheduler, Sequence

log = logging.getLogger("areal_embedded")

# SGLang sampling params that only change text formatting: accepted and ignored (we return ids).
IGNORED_SAMPLING = {"skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim"}
# SGLang sampling params this server does not implement: accepted only at their neutral value.
NEUTRAL_SAMPLING = {"stop": (None, [], ""), "min_new_tokens": (0, None), "frequency_penalty": (0, 0.0, None),
                    "presence_penalty": (0, 0.0, None), "repetition_penalty": (1, 1.0, None),
                    "min_p": (0, 0.0, None), "regex": (None,), "json_schema": (None,), "ebnf": (None,)}
SUPPORTED_SAMPLING = {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids", "ignore_eos", "n",
                      "sampling_seed", "seed"}


class BadRequest(ArealError):
    """A request the server refuses (HTTP 400), with a message naming the field."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}, "success": False, "message": message}, status_code=status)


def parse_sampling(params: dict[str, Any] | None, vocab_size: int) -> dict[str, Any]:
    """Validate SGLang ``sampling_params``; returns the ones the scheduler uses."""
    params = dict(params or {})
    for key in params:
        if key in IGNORED_SAMPLING or key in SUPPORTED_SAMPLING:
            continue
        if key in NEUTRAL_SAMPLING:
            if params[key] not in NEUTRAL_SAMPLING[key]:
                raise BadRequest(f"sampling_params.{key}={params[key]!r} is not supported by the embedded server")
            continue
        raise BadRequest(f"unknown sampling_params.{key}; supported: {', '.join(sorted(SUPPORTED_SAMPLING))}")
    out = {
        "max_new_tokens": 128 if params.get("max_new_tokens") is None else params["max_new_tokens"],
        "temperature": float(params.get("temperature", 1.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "top_k": int(params.get("top_k", -1)),
        "stop_token_ids": list(params.get("stop_token_ids") or []),
        "ignore_eos": bool(params.get("ignore_eos", False)),
        "n": int(params.get("n", 1)),
        "seed": params.get("sampling_seed", params.get("seed")),
    }
    if not isinstance(out["max_new_tokens"], int) or out["max_new_tokens"] < 0:
        raise BadRequest(f"sampling_params.max_new_tokens must be an integer >= 0, got {out['max_new_tokens']!r}")
    if out["temperature"] < 0:
        raise BadRequest(f"sampling_params.temperature must be >= 0, got {out['temperature']}")
    if not 0 < out["top_p"] <= 1:
        raise BadRequest(f"sampling_params.top_p must be in (0, 1], got {out['top_p']}")
    if out["top_k"] == 0 or out["top_k"] < -1:
        raise BadRequest(f"sampling_params.top_k must be -1 (off) or >= 1, got {out['top_k']}")
    if out["n"] < 1:
        raise BadRequest(f"sampling_params.n must be >= 1, got {out['n']}")
    bad = [t for t in out["stop_token_ids"] if not 0 <= int(t) < vocab_size]
    if bad:
        raise BadRequest(f"sampling_params.stop_token_ids {bad} are outside the vocabulary [0, {vocab_size})")
    if out["seed"] is not None and not isinstance(out["seed"], int):
        raise BadRequest(f"sampling_params.sampling_seed must be an integer, got {out['seed']!r}")
    return out


def _parse_version(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{field} must be an integer (as a string or number), got {value!r}") from None


class EmbeddedServer:
    """Request parsing and answers; the scheduler thread does the model work."""

    def __init__(self, runner: ModelRunner, scheduler: Scheduler, seed: int, tokenizer=None):
        self.runner, self.scheduler, self.tokenizer = runner, scheduler, tokenizer
        self.rng = random.Random(seed)
        self.groups: dict[str, Any] = {}

    async def generate(self, body: dict[str, Any], disconnected: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Answer one ``/generate``; if ``disconnected()`` turns true first, abort its sequences."""
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the embedded server")
        prompts, single = self._prompts(body)
        sampling = parse_sampling(body.get("sampling_params"), self.runner.vocab_size)
        stop_ids = set(sampling["stop_token_ids"])
        if not sampling["ignore_eos"]:
            stop_ids |= self.runner.eos_token_ids
        loop = asyncio.get_running_loop()
        futures, sequences = [], []
        base_rid = body.get("rid") if isinstance(body.get("rid"), str) else uuid.uuid4().hex
        for p, prompt in enumerate(prompts):
            if len(prompt) >= self.runner.max_len:
                raise BadRequest(f"input_ids has {len(prompt)} tokens; the model's context is {self.runner.max_len}")
            for i in range(sampling["n"]):
                seed = sampling["seed"] + i if sampling["seed"] is not None else self.rng.getrandbits(63)
                future = loop.create_future()
                sequences.append(Sequence(
                    rid=base_rid if len(prompts) * sampling["n"] == 1 else f"{base_rid}-{p}-{i}",
                    prompt=prompt,
                    max_new_tokens=min(sampling["max_new_tokens"], self.runner.max_len - len(prompt)),
                    temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
                    stop_ids=frozenset(stop_ids), rng=random.Random(seed),
                    on_done=lambda result, f=future: loop.call_soon_threadsafe(_settle, f, result),
                ))
                futures.append(future)
        self.scheduler.submit(sequences)
        gathered = asyncio.gather(*futures)
        while disconnected is not None and not (await asyncio.wait({gathered}, timeout=1.0))[0]:
            if await disconnected():
                mine = set(map(id, sequences))
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
            if not prompt or not all(isinstance(t, int) and 0 <= t < self.runner.vocab_size for t in prompt):
                raise BadRequest(f"input_ids must be non-empty lists of integers in [0, {self.runner.vocab_size})")
        return prompts, single

    async def control(self, command: Command) -> Any:
        return await asyncio.wrap_future(self.scheduler.command(command))

    async def update_from_disk(self, body: dict[str, Any]) -> dict[str, Any]:
        path = body.get("model_path")
        if not path:
            raise BadRequest("update_weights_from_disk needs model_path")
        version = self._next_version(body.get("weight_version"))

        def run():
            count = self.runner.load_from_disk(path)
            self.scheduler.version = version
            return count

        count = await self.control(Command("update_weights_from_disk", run, exclusive=True,
                                           abort_running=bool(body.get("abort_all_requests", False))))
        return {"success": True, "message": f"loaded {count} tensors from {path}; weight_version {version}",
                "num_paused_requests": 0}

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
        return {"success": True, "message": f"joined weight group {name!r} as rank {body['rank_offset']}"}

    async def update_from_distributed(self, body: dict[str, Any]) -> dict[str, Any]:
        from areal_sglang.weight_transfer import broadcast_from_rank0, dtype_from_name

        name = body.get("group_name", "areal_weights")
        group = self.groups.get(name)
        if group is None:
            raise BadRequest(f"no weight group {name!r}: call /init_weights_update_group first")
        names, dtypes, shapes = body.get("names") or [], body.get("dtypes") or [], body.get("shapes") or []
        if not (len(names) == len(dtypes) == len(shapes)):
            raise BadRequest(f"names, dtypes, shapes differ in length ({len(names)}, {len(dtypes)}, {len(shapes)})")
        version = self._next_version(body["weight_version"]) if body.get("weight_version") is not None else None
        device = self.runner.device if self.runner.device.type == "cuda" else torch.device("cpu")

        def run():
            buffers = [torch.empty(shape, dtype=dtype_from_name(d), device=device) for d, shape in zip(dtypes, shapes)]
            broadcast_from_rank0(group, buffers)
            count = self.runner.load_tensors(zip(names, buffers))
            if version is not None:
                self.scheduler.version = version
            return count

        count = await self.control(Command("update_weights_from_distributed", run, exclusive=True,
                                           abort_running=bool(body.get("abort_all_requests", False))))
        return {"success": True, "message": f"received {count} tensors"}

    async def set_version(self, body: dict[str, Any]) -> dict[str, Any]:
        version = _parse_version(body.get("new_version"), "new_version")

        def run():
            self.scheduler.version = version

        await self.control(Command("update_weight_version", run, exclusive=True,
                                   abort_running=bool(body.get("abort_all_requests", False))))
        return {"success": True, "message": f"weight_version {version}"}

    async def weights_checksum(self) -> dict[str, Any]:
        """Checksum of the model's parameters and the version they belong to. Read outside the
        model thread (weights change only in exclusive update commands); a version change during
        the read means an update overlapped it, so the read is repeated."""
        from areal_core.plugin import tensors_checksum

        while True:
            version = self.scheduler.version
            checksum = await asyncio.to_thread(tensors_checksum, self.runner.model.named_parameters())
            if self.scheduler.version == version:
                return {"checksum": checksum, "weight_version": str(version)}

    def _next_version(self, requested: Any) -> int:
        return self.scheduler.version + 1 if requested is None else _parse_version(requested, "weight_version")

    def info(self) -> dict[str, Any]:
        return {
            "model_path": self.runner.model_path, "tokenizer_path": self.runner.model_path, "is_generation": True,
            "weight_version": str(self.scheduler.version), "device": str(self.runner.device),
            "dtype": str(self.runner.dtype).removeprefix("torch."), "max_batch": self.scheduler.max_batch,
            "max_len": self.runner.max_len, "paused": self.scheduler.paused,
            "running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
            "decode_steps": self.scheduler.steps,
        }


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
        except (BadRequest, ArealError, ValueError) as exc:
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - the caller sees the reason
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

    @app.post("/update_weights_from_disk")
    async def update_from_disk(request: Request):
        return await with_body(request, server.update_from_disk)

    @app.post("/init_weights_update_group")
    async def init_group(request: Request):
        return await with_body(request, server.init_group)

    @app.post("/update_weights_from_distributed")
    async def update_from_distributed(request: Request):
        return await with_body(request, server.update_from_distributed)

    @app.post("/update_weight_version")
    async def update_version(request: Request):
        return await with_body(request, server.set_version)

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
    parser.add_argument("--model", required=True, help="local Hugging Face model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together")
    parser.add_argument("--max-prefill-tokens", type=int, default=8192, help="padded tokens per batched prefill")
    parser.add_argument("--max-len", type=int, default=None, help="context length cap (default: the model's)")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--seed", type=int, default=0, help="seeds requests that carry no sampling_seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--weight-version", type=int, default=0, help="initial weight version")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = ModelRunner(args.model, max_rows=args.max_batch, device=args.device, dtype=args.dtype, max_len=args.max_len)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except Exception:  # noqa: BLE001 - a model directory without a tokenizer still serves input_ids
        tokenizer = None
    scheduler = Scheduler(runner, args.max_batch, args.max_prefill_tokens, version=args.weight_version)
    scheduler.start()
    server = EmbeddedServer(runner, scheduler, args.seed, tokenizer)
    log.warning("serving %s on %s:%d (%s, %s, max batch %d)", args.model, args.host, args.port, runner.device,
                runner.dtype, args.max_batch)
    try:
        uvicorn.run(build_app(server), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        scheduler.stop()


if __name__ == "__main__":
    main()
