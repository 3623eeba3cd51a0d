"""An inference backend written the way a third party would: only against ``areal_core.plugin``.

It speaks its own small JSON protocol (nothing like SGLang's) to its own server, which this same
file runs (``python thirdparty_backend.py --model DIR --host H --port P``): a standard-library
HTTP server around a transformers model that decodes one request at a time, token by token,
recomputing the whole prefix each step (slow and simple on purpose: what is tested is the
boundary, not the server). Wire protocol::

    POST /gen     {prompt, max_tokens, temperature, top_k, top_p, stop, seed}
                  -> {tokens, logprobs, finish: stop|length|abort, version}
    POST /pause   in-flight /gen calls return what they have with finish "abort"; new ones wait
    POST /resume
    POST /load    {dir, version}                 disk path: load an HF directory
    POST /join    {host, port, rank, world}      distributed path: join the trainer's gloo group
    POST /recv    {names, shapes, dtypes}        receive one bucket of broadcast tensors
    POST /commit  {version}
    GET  /health, /checksum

``tests/e2e/test_thirdparty_backend.py`` runs ``areal train`` with it (disk and distributed sync,
checksums verified after every sync) and the shared InferenceBackend contract suite against it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import Field

from areal_core.plugin import (
    ArealError,
    Component,
    InferenceConfigBase,
    ModelRequest,
    ModelResponse,
    WeightUpdateMeta,
    hookimpl,
    tensors_checksum,
)

NAME = "thirdparty_http"


# ================================================================ the plugin (trainer side)
class ThirdPartyConfig(InferenceConfigBase):
    """Options of the third-party server."""

    threads: int = Field(1, ge=1, description="torch threads of the server")


class ThirdPartyBackend:
    """InferenceBackend + SupportsWeightsChecksum over the JSON protocol above."""

    def __init__(self, config: ThirdPartyConfig):
        self.config = config

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        return [sys.executable, __file__, "--model", model_path, "--host", host, "--port", str(port),
                "--threads", str(self.config.threads)]

    async def generate(self, client: Any, addr: str, req: ModelRequest) -> ModelResponse:
        if not req.input_ids:
            raise ArealError(f"{NAME}: a prompt needs at least one token")
        s = req.sampling
        body = {"prompt": list(req.input_ids), "max_tokens": s.max_new_tokens, "temperature": s.temperature,
                "top_k": s.top_k, "top_p": s.top_p, "stop": list(s.stop_token_ids), "seed": s.seed}
        out = await _call(client, addr, "/gen", body)
        n = len(out["tokens"])
        return ModelResponse(list(req.input_ids), out["tokens"], out["logprobs"], [out["version"]] * n, out["finish"])

    async def pause(self, client: Any, addr: str) -> None:
        await _call(client, addr, "/pause")

    async def resume(self, client: Any, addr: str) -> None:
        await _call(client, addr, "/resume")

    async def health(self, client: Any, addr: str) -> bool:
        try:
            return (await client.get(f"http://{addr}/health")).status_code == 200
        except Exception:  # noqa: BLE001 - unreachable is unhealthy
            return False

    def weight_updater(self, meta: WeightUpdateMeta):
        if meta.type == "disk":
            return DiskUpdater()
        if meta.type == "distributed":
            return BroadcastUpdater(meta)
        raise ArealError(f"{NAME}: weight_sync.type={meta.type!r} is not supported (disk, distributed)")

    async def weights_checksum(self, client: Any, addr: str) -> str:
        return (await _call(client, addr, "/checksum", method="GET"))["checksum"]


class DiskUpdater:
    async def connect(self, client: Any, addrs: list[str]) -> None:
        pass

    async def push(self, client: Any, addrs: list[str], weights: Any, version: int) -> int:
        await asyncio.gather(*(_call(client, a, "/load", {"dir": weights, "version": version}) for a in addrs))
        return 0

    async def close(self, client: Any) -> None:
        pass


class BroadcastUpdater:
    """Trainer rank 0 hosts a gloo group; server i joins as rank i + 1; one broadcast per tensor."""

    def __init__(self, meta: WeightUpdateMeta):
        self.meta, self.group = meta, None

    async def connect(self, client: Any, addrs: list[str]) -> None:
        world = len(addrs) + 1
        joins = [_call(client, a, "/join", {"host": self.meta.master_address, "port": self.meta.master_port,
                                            "rank": i + 1, "world": world}) for i, a in enumerate(addrs)]
        *_, self.group = await asyncio.gather(*joins, asyncio.to_thread(
            _gloo_group, self.meta.master_address, self.meta.master_port, 0, world))

    async def push(self, client: Any, addrs: list[str], weights: Any, version: int) -> int:
        sent = 0
        for name, tensor in weights:
            body = {"names": [name], "shapes": [list(tensor.shape)], "dtypes": [str(tensor.dtype)]}
            await asyncio.gather(*(_call(client, a, "/recv", body) for a in addrs),
                                 asyncio.to_thread(_broadcast, self.group, tensor.detach().contiguous()))
            sent += tensor.numel() * tensor.element_size()
        await asyncio.gather(*(_call(client, a, "/commit", {"version": version}) for a in addrs))
        return sent

    async def close(self, client: Any) -> None:
        self.group = None


async def _call(client: Any, addr: str, path: str, body: dict | None = None, method: str = "POST") -> Any:
    resp = await (client.get(f"http://{addr}{path}") if method == "GET"
                  else client.post(f"http://{addr}{path}", json=body or {}))
    if resp.status_code != 200:
        raise ArealError(f"{NAME} server {addr} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def _gloo_group(host: str, port: int, rank: int, world: int):
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=120)
    store = dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout)
    return dist.ProcessGroupGloo(store, rank, world, timeout)


def _broadcast(group, tensor) -> None:
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank, opts.rootTensor = 0, 0
    group.broadcast([tensor], opts).wait()


@hookimpl
def areal_register_inference_backends():
    return [Component(NAME, "thirdparty_backend:ThirdPartyBackend", "thirdparty_backend:ThirdPartyConfig",
                      "a third-party backend built on areal_core.plugin alone (tests)")]


# ================================================================ the server
class Server:
    """The model, its version, and the pause gate; one generation step at a time."""

    def __init__(self, model_dir: str):
        self.model = _load(model_dir)
        self.version = 0
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.running.set()
        self.group = None

    def generate(self, body: dict) -> dict:
        import torch

        if body["top_k"] not in (-1, 0) or body["top_p"] != 1.0:
            raise ValueError(f"top_k/top_p: only -1/1.0 are supported (got top_k={body['top_k']}, top_p={body['top_p']})")
        self.running.wait()
        generator = torch.Generator().manual_seed(body["seed"] if body["seed"] is not None else 0)
        tokens, logprobs, finish = [], [], "length"
        while len(tokens) < body["max_tokens"]:
            if not self.running.is_set():
                finish = "abort"
                break
            with self.lock, torch.no_grad():
                logits = self.model(torch.tensor([body["prompt"] + tokens])).logits[0, -1].float()
                version = self.version
            if body["temperature"] == 0:
                token = int(logits.argmax())
                logprob = float(torch.log_softmax(logits, -1)[token])
            else:
                logp = torch.log_softmax(logits / body["temperature"], -1)
                token = int(torch.multinomial(logp.exp(), 1, generator=generator))
                logprob = float(logp[token])
            tokens.append(token)
            logprobs.append(logprob)
            if token in body["stop"]:
                finish = "stop"
                break
        return {"tokens": tokens, "logprobs": logprobs, "finish": finish, "version": version if tokens else self.version}

    def load(self, body: dict) -> dict:
        model = _load(body["dir"])
        with self.lock:
            self.model, self.version = model, int(body["version"])
        return {}

    def join(self, body: dict) -> dict:
        self.group = _gloo_group(body["host"], body["port"], body["rank"], body["world"])
        return {}

    def recv(self, body: dict) -> dict:
        import torch

        params = dict(self.model.state_dict(keep_vars=True))
        for name, shape, dtype in zip(body["names"], body["shapes"], body["dtypes"]):
            tensor = torch.empty(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
            _broadcast(self.group, tensor)
            with self.lock, torch.no_grad():
                params[name].copy_(tensor)
        return {}

    def commit(self, body: dict) -> dict:
        with self.lock:
            self.version = int(body["version"])
        return {}

    def checksum(self) -> dict:
        with self.lock:
            return {"checksum": tensors_checksum(self.model.named_parameters())}


def _load(model_dir: str):
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    if not (Path(model_dir) / "config.json").is_file():
        raise ValueError(f"{model_dir!r} is not a model directory")
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def serve(model_dir: str, host: str, port: int) -> None:
    server = Server(model_dir)
    routes = {"/gen": server.generate, "/load": server.load, "/join": server.join, "/recv": server.recv,
              "/commit": server.commit, "/pause": lambda _: server.running.clear() or {},
              "/resume": lambda _: server.running.set() or {}}

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {})
            elif self.path == "/checksum":
                self._reply(200, server.checksum())
            else:
                self._reply(404, {"error": self.path})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            try:
                self._reply(200, routes[self.path](body))
            except KeyError:
                self._reply(404, {"error": self.path})
            except (ValueError, OSError) as exc:
                self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    serve(args.model, args.host, args.port)
