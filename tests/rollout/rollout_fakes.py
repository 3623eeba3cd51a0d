"""In-test inference backend for the pure-asyncio rollout tests (no model, no HTTP).

``ScriptedBackend`` implements the InferenceBackend protocol for any number of fake servers
(addresses are just keys). Its "model" is a rule that makes every token checkable by hand:

    next token = (previous token + 1 + 10·version) mod 97,   logprob = −(version + 1) / 10

so the tokens after a weight update show which version produced them. A server generates one
token per ``step_s``; pausing it makes in-flight requests return their partial tokens with
finish reason ``abort`` (the SGLang behaviour the client relies on).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from areal_core.api.types import ModelRequest, ModelResponse, WeightUpdateMeta


def next_token(previous: int, version: int) -> int:
    return (previous + 1 + 10 * version) % 97


def token_logprob(version: int) -> float:
    return -(version + 1) / 10


@dataclass
class FakeServer:
    version: int = 0
    paused: bool = False
    dead: bool = False
    hang: bool = False  # accept requests and never answer
    step_s: float = 0.002
    requests: int = 0
    tokens: int = 0  # generated so far, all requests
    in_flight: int = 0
    inputs: list[list[int]] = field(default_factory=list)


class ScriptedBackend:
    """InferenceBackend over in-process fake servers (see module docstring)."""

    def __init__(self, addrs=("s0:1", "s1:1"), step_s: float = 0.002, report_versions: bool = True):
        self.servers = {a: FakeServer(step_s=step_s) for a in addrs}
        self.report_versions = report_versions

    def server_command(self, model_path, host, port):
        return ["true"]

    def _up(self, addr: str) -> FakeServer:
        srv = self.servers[addr]
        if srv.dead:
            raise ConnectionError(f"connection refused by {addr}")
        return srv

    async def generate(self, client, addr, req: ModelRequest) -> ModelResponse:
        srv = self._up(addr)
        srv.requests += 1
        srv.inputs.append(list(req.input_ids))
        srv.in_flight += 1
        try:
            if srv.hang:
                await asyncio.Event().wait()
            out: list[int] = []
            version = srv.version
            finish = "length"
            previous = req.input_ids[-1]
            while len(out) < req.sampling.max_new_tokens:
                if srv.paused:
                    finish = "abort"
                    break
                await asyncio.sleep(srv.step_s)
                if srv.paused:
                    finish = "abort"
                    break
                previous = next_token(previous, version)
                out.append(previous)
                srv.tokens += 1
                if previous in req.sampling.stop_token_ids:
                    finish = "stop"
                    break
            versions = [version] * len(out) if self.report_versions else []
            return ModelResponse(list(req.input_ids), out, [token_logprob(version)] * len(out), versions, finish)
        finally:
            srv.in_flight -= 1

    async def pause(self, client, addr):
        self._up(addr).paused = True

    async def resume(self, client, addr):
        self._up(addr).paused = False

    async def health(self, client, addr):
        return not self.servers[addr].dead

    def weight_updater(self, meta: WeightUpdateMeta) -> ScriptedUpdater:
        return ScriptedUpdater(self)


class ScriptedUpdater:
    """The fake servers' only weight path: ``push`` sets every server's version (any ``weights``)."""

    def __init__(self, backend: ScriptedBackend):
        self.backend = backend

    async def connect(self, client, addrs):
        pass

    async def push(self, client, addrs, weights, version: int) -> int:
        for addr in addrs:
            self.backend._up(addr).version = version
        return 0

    async def close(self, client):
        pass


async def update_weights(client, version: int) -> None:
    """What the trainer does on an update: push through the backend's updater, then move the
    run's weight version (the client only reads it)."""
    await client.push_weights(client.backend.weight_updater(WeightUpdateMeta()), "/unused", version)
    client.weight_version.set(version)


def controller_update_weights(controller, version: int) -> None:
    """The same through a RolloutController (between its pause and resume)."""
    updater = controller.engine.backend.weight_updater(WeightUpdateMeta())
    controller.push_weights(updater, "/unused", version)
    controller.engine.weight_version.set(version)
