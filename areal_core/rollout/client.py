"""The interruptible inference client: what workflows generate with (an ``InferenceEngine``).

It talks to N inference servers through an :class:`~areal_core.api.InferenceBackend` (the wire
protocol) and one shared ``httpx.AsyncClient`` (on aiohttp's connection pool: :mod:`areal_core.rollout.transport`).

**Interruption** (DESIGN.md §2). A weight update pauses the servers, which abort in-flight
requests and return their partial tokens with finish reason ``abort``. :meth:`RolloutClient.agenerate`
then runs rounds until the completion ends::

    round k:  input_ids_k      = prompt + out[0:n_k]            (n_k tokens generated so far)
              max_new_tokens_k = max_new_tokens − n_k
              wait while paused, submit, append the round's tokens/logprobs/versions to out

so one completion can span several weight versions: ``output_versions[i]`` is the version that
produced token i. The server recomputes the KV cache of the longer prompt after an update.

**Routing.** A new request goes to the next server round robin; all rounds of one request, and
every request carrying a ``rid`` seen before (the turns of one trajectory), go to the same server
(sticky: the server keeps its prefix cache). A server that errors or exceeds ``request_timeout_s``
is marked dead for ``dead_cooldown_s`` and the round is retried on the next server; when every
server failed the round, :class:`InferenceUnavailableError` names each address and its error.

**Controller-side operations** (:meth:`pause`, :meth:`resume`, :meth:`push_weights`) act on every
server at once and record their wall time (``pause_s``, ``sync_s``, ``resume_s`` in :meth:`stats`).
Each has a deadline: ``control_timeout_s`` for pause, resume and health, ``weight_update_timeout_s``
for a weight push; a server that misses it (stopped, hung, dead) never blocks the trainer.

**Lost servers.** A server that fails a control call and then fails a health probe is *lost*.
With ``on_server_lost="restart"`` and a scheduler that can (``restart_server``), it is started
again at the same address, brought to the last pushed weights and version (disk and adapter paths;
until the first push it serves the initial weights, version 0), paused if the others are, and
kept. With ``"continue"`` (or a restart that fails) and others left, it is dropped from
:attr:`addrs` (logged with the reason; generation and later syncs use the rest; its in-flight
requests fail over to them). A disk or adapter weight push that lost a server is then repeated.
With ``"stop"``, or none left, or a ``distributed`` push (its process group includes the lost
server), :class:`InferenceUnavailableError` names every failed server and why. :attr:`lost`
keeps the dropped addresses.
New weights travel through the backend's :class:`~areal_core.api.WeightUpdater`; the client only
lends it its connections and server list.

**Version.** The client reads the run's :class:`~areal_core.api.WeightVersion` (owned by the
trainer) and tags a round's tokens with it when the server reports no version of its own.
Use a client from one event loop at a time: its httpx client and pause event belong to the loop
that used it last (they are recreated when a new loop takes the client over).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from areal_core.api.protocols import InferenceBackend, WeightUpdater
from areal_core.api.types import ModelRequest, ModelResponse, WeightVersion
from areal_core.auth import auth_headers
from areal_core.errors import ArealError
from areal_core.logging import get_logger

if TYPE_CHECKING:
    import httpx

log = get_logger(__name__)


HEALTH_TIMEOUT_S = 5.0  # a health probe is a GET of an empty answer: slower means not answering
KEEPALIVE_EXPIRY_S = 2.0  # idle pooled connections are dropped after this (see _bind_to_running_loop)


class InferenceUnavailableError(ArealError):
    """Every inference server failed one request (unreachable, erroring or timing out)."""


class RolloutClient:
    """``InferenceEngine`` over several servers, riding through pauses and weight updates.

    ``addrs``: ``"host:port"`` of each server. ``weight_version``: the run's version (read only; a
    fresh one at 0 when not given). ``pause_poll_s``: back-off before re-submitting an aborted round when this client did not
    pause the servers itself (someone else paused them).
    """

    def __init__(self, backend: InferenceBackend, addrs: list[str], *, request_timeout_s: float = 600.0,
                 dead_cooldown_s: float = 10.0, pause_poll_s: float = 0.05,
                 weight_version: WeightVersion | None = None, max_sticky_rids: int = 100_000,
                 control_timeout_s: float = 60.0, weight_update_timeout_s: float = 1800.0,
                 on_server_lost: str = "continue", connect_timeout_s: float = 10.0):
        if not addrs:
            raise ArealError("RolloutClient needs at least one inference server address (got none)")
        if len(set(addrs)) != len(addrs):
            raise ArealError(f"RolloutClient: duplicate server addresses in {addrs}")
        if request_timeout_s <= 0:
            raise ArealError(f"rollout.request_timeout_s must be > 0 (got {request_timeout_s})")
        self.backend = backend
        self.addrs = list(addrs)
        self.request_timeout_s = float(request_timeout_s)
        self.control_timeout_s = float(control_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)  # TCP connect to a server (loopback can stall under load)
        self.weight_update_timeout_s = float(weight_update_timeout_s)
        if on_server_lost not in ("restart", "continue", "stop"):
            raise ArealError(f"rollout.on_server_lost must be 'restart', 'continue' or 'stop' (got {on_server_lost!r})")
        self.on_server_lost = on_server_lost
        self.lost: dict[str, str] = {}  # address -> why it was dropped
        # what the scheduler knows of a server (pid, exit status or signal, log tail), when it can
        # tell, and how it starts one again (blocking until healthy): SupportsServerStatus
        self.describe_server: Callable[[str], str] | None = None
        self.restart_server: Callable[[str], None] | None = None
        self._last_push: tuple[WeightUpdater, Any, int] | None = None  # a disk/adapter push to replay
        self.dead_cooldown_s = float(dead_cooldown_s)
        self.pause_poll_s = float(pause_poll_s)
        self.weight_version = weight_version if weight_version is not None else WeightVersion()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop _http and _resumed belong to
        self._http: httpx.AsyncClient | None = None
        self._resumed: asyncio.Event | None = None
        self._paused = False
        self._round_robin = itertools.count()
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._max_sticky = max_sticky_rids
        self._dead_until: dict[str, float] = {}
        self._stats = {"requests": 0, "rounds": 0, "interruptions": 0, "failovers": 0, "output_tokens": 0,
                       "pause_s": 0.0, "resume_s": 0.0, "sync_s": 0.0, "sync_bytes": 0}
        self._rounds_in_flight = 0
        self._busy_since = 0.0  # when _rounds_in_flight last rose from 0
        self._busy_s = 0.0  # closed intervals with at least one round in flight

    @classmethod
    def from_config(cls, backend: InferenceBackend, addrs: list[str], rollout,
                    weight_version: WeightVersion | None = None) -> RolloutClient:
        """Build from a :class:`areal_core.config.schema.RolloutConfig`."""
        return cls(backend, addrs, request_timeout_s=rollout.request_timeout_s, weight_version=weight_version,
                   control_timeout_s=rollout.control_timeout_s, weight_update_timeout_s=rollout.weight_update_timeout_s,
                   on_server_lost=rollout.on_server_lost)

    # ----------------------------------------------------------------- InferenceEngine
    def get_version(self) -> int:
        return self.weight_version.value

    async def agenerate(self, req: ModelRequest) -> ModelResponse:
        """Generate one completion; re-submits after every interruption until it stops or hits
        ``max_new_tokens``. Raises :class:`InferenceUnavailableError` if every server fails."""
        if req.sampling.max_new_tokens < 1:
            raise ArealError(f"sampling.max_new_tokens must be >= 1 (got {req.sampling.max_new_tokens})")
        start = time.monotonic()
        self._stats["requests"] += 1
        out_ids: list[int] = []
        out_logprobs: list[float] = []
        out_versions: list[int] = []
        interruptions = 0
        addr = self._sticky.get(req.rid) if req.rid else None  # one request stays on one server
        while True:
            await self._wait_resumed()
            remaining = req.sampling.max_new_tokens - len(out_ids)
            round_req = ModelRequest(input_ids=list(req.input_ids) + out_ids,
                                     sampling=replace(req.sampling, max_new_tokens=remaining),
                                     rid=req.rid, metadata=req.metadata, image_data=req.image_data)
            version = self.weight_version.value
            resp, addr = await self._generate_round(round_req, addr)
            n = len(resp.output_ids)
            if n > remaining:
                raise ArealError(f"inference server returned {n} tokens for max_new_tokens={remaining} (rid={req.rid!r})")
            out_ids += resp.output_ids
            out_logprobs += resp.output_logprobs
            out_versions += resp.output_versions if len(resp.output_versions) == n else [version] * n
            self._stats["output_tokens"] += n
            finish = resp.finish_reason
            if finish != "abort":
                break
            if len(out_ids) >= req.sampling.max_new_tokens:
                finish = "length"
                break
            interruptions += 1
            self._stats["interruptions"] += 1
            if not self._paused:  # aborted by someone else: don't spin on a paused server
                await asyncio.sleep(self.pause_poll_s)
        return ModelResponse(input_ids=list(req.input_ids), output_ids=out_ids, output_logprobs=out_logprobs,
                             output_versions=out_versions, finish_reason=finish,
                             latency_s=time.monotonic() - start, n_interruptions=interruptions)

    # ----------------------------------------------------------------- routing + failover
    def _candidates(self, preferred: str | None) -> list[str]:
        """Servers to try for one round, best first: ``preferred`` (the request's sticky server),
        then round robin over live servers, then servers in their dead cooldown (last resort)."""
        now = time.monotonic()
        start = next(self._round_robin) % len(self.addrs)
        order = self.addrs[start:] + self.addrs[:start]
        if preferred is not None:
            order.remove(preferred)
            order.insert(0, preferred)
        alive = [a for a in order if self._dead_until.get(a, 0.0) <= now]
        return alive + [a for a in order if a not in alive]

    def _remember(self, rid: str, addr: str) -> None:
        if not rid:
            return
        self._sticky[rid] = addr
        self._sticky.move_to_end(rid)
        while len(self._sticky) > self._max_sticky:
            self._sticky.popitem(last=False)

    async def _generate_round(self, req: ModelRequest, preferred: str | None) -> tuple[ModelResponse, str]:
        """One submission with failover; returns the response and the server that produced it."""
        errors: list[str] = []
        for addr in self._candidates(preferred):
            try:
                with self._in_flight():
                    resp = await asyncio.wait_for(self.backend.generate(self.http, addr, req), self.request_timeout_s)
            except asyncio.TimeoutError:
                errors.append(f"{addr}: no answer within request_timeout_s={self.request_timeout_s:g}")
            except Exception as exc:  # noqa: BLE001 - any server failure moves the round to another server
                errors.append(f"{addr}: {type(exc).__name__}: {exc}")
            else:
                self._dead_until.pop(addr, None)
                self._remember(req.rid, addr)
                self._stats["rounds"] += 1
                return resp, addr
            self._dead_until[addr] = time.monotonic() + self.dead_cooldown_s
            self._stats["failovers"] += 1
            log.warning("inference server failed, trying the next one", error=errors[-1], rid=req.rid)
        raise InferenceUnavailableError(
            f"generate failed on every inference server ({len(self.addrs)}):\n  " + "\n  ".join(errors)
        )

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count one generate round as in flight (``busy_s``: wall time with at least one)."""
        if self._rounds_in_flight == 0:
            self._busy_since = time.monotonic()
        self._rounds_in_flight += 1
        try:
            yield
        finally:
            self._rounds_in_flight -= 1
            if self._rounds_in_flight == 0:
                self._busy_s += time.monotonic() - self._busy_since

    def busy_s(self) -> float:
        """Wall time so far during which at least one generate round was in flight on some server:
        the servers' busy time as the client sees it (a paused server returns its rounds at once)."""
        open_s = time.monotonic() - self._busy_since if self._rounds_in_flight else 0.0
        return self._busy_s + open_s

    # ----------------------------------------------------------------- pause / resume / weights
    async def _wait_resumed(self) -> None:
        if self._paused:
            await self._resume_event().wait()

    def _resume_event(self) -> asyncio.Event:
        self._bind_to_running_loop()
        assert self._resumed is not None  # made by _bind_to_running_loop
        return self._resumed

    def _bind_to_running_loop(self) -> None:
        """(Re)create the loop-bound objects when called from a new event loop (e.g. a health check
        under ``asyncio.run`` before the rollout controller's loop takes the client over)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        import httpx

        from areal_core.rollout.transport import PooledTransport

        self._loop = loop
        # keepalive below the servers' idle timeout (uvicorn's default, SGLang's too, is 5 s):
        # with equal timeouts a request can go out on a connection the server is closing (ReadError)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=self.connect_timeout_s), headers=auth_headers(),
                                       transport=PooledTransport(KEEPALIVE_EXPIRY_S))
        self._resumed = asyncio.Event()
        if not self._paused:
            self._resumed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    async def pause(self) -> None:
        """Hold new rounds, then pause every server (their in-flight requests return ``abort``)."""
        start = time.monotonic()
        self._paused = True
        self._resume_event().clear()
        await self._on_all("pause", lambda a: self.backend.pause(self.http, a))
        self._stats["pause_s"] = time.monotonic() - start

    async def resume(self) -> None:
        """Resume every server, then release the held rounds."""
        start = time.monotonic()
        await self._on_all("resume", lambda a: self.backend.resume(self.http, a))
        self._paused = False
        self._resume_event().set()
        self._stats["resume_s"] = time.monotonic() - start

    async def connect_updater(self, updater: WeightUpdater) -> None:
        """Let ``updater`` prepare its path to every server (once per run)."""
        await self._wrap_server_errors("connecting the weight updater", updater.connect(self.http, self.addrs))

    async def push_weights(self, updater: WeightUpdater, weights: Any, version: int) -> int:
        """Make every server serve ``weights`` as ``version`` through ``updater`` (between
        :meth:`pause` and :meth:`resume`), within ``weight_update_timeout_s``. A server lost on the
        way is dropped and the push repeated on the rest (see "Lost servers"). Returns the bytes sent."""
        start = time.monotonic()
        what = f"weight update to version {version}"
        try:
            sent = await self._wrap_server_errors(what, self._deadline(
                updater.push(self.http, list(self.addrs), weights, version), self.weight_update_timeout_s, what))
        except (ArealError, TimeoutError) as exc:
            lost = await self._unhealthy(self.addrs)
            if not lost or not isinstance(weights, (str, os.PathLike)):
                raise
            await self._lose({a: f"{what} failed ({exc}) and /health does not answer" for a in lost}, what)
            sent = await self._wrap_server_errors(what, self._deadline(
                updater.push(self.http, list(self.addrs), os.fspath(weights), version), self.weight_update_timeout_s,
                what))
        if isinstance(weights, (str, os.PathLike)):
            self._last_push = (updater, os.fspath(weights), version)
        self._stats["sync_s"] = time.monotonic() - start
        self._stats["sync_bytes"] = int(sent or 0)
        return int(sent or 0)

    async def close_updater(self, updater: WeightUpdater) -> None:
        await updater.close(self.http)

    async def _wrap_server_errors(self, what: str, call) -> Any:
        """An updater that cannot reach a server raises InferenceUnavailableError naming the step."""
        import httpx

        try:
            return await call
        except httpx.TransportError as exc:
            raise InferenceUnavailableError(f"{what} failed: an inference server is unreachable "
                                            f"({type(exc).__name__}: {exc}; servers {', '.join(self.addrs)})") from None

    async def _on_all(self, what: str, call) -> None:
        """``call(addr)`` on every server within ``control_timeout_s``; failed servers that are also
        unhealthy are lost (see "Lost servers"), any other failure raises."""
        addrs = list(self.addrs)
        results = await asyncio.gather(*(self._deadline(call(a), self.control_timeout_s, what) for a in addrs),
                                       return_exceptions=True)
        failed = {a: f"{type(r).__name__}: {r}" for a, r in zip(addrs, results) if isinstance(r, BaseException)}
        if not failed:
            return
        unhealthy = set(await self._unhealthy(list(failed)))
        answering = {a: why for a, why in failed.items() if a not in unhealthy}
        if answering:
            for a in failed:
                self._dead_until[a] = time.monotonic() + self.dead_cooldown_s
            raise InferenceUnavailableError(f"{what} failed on {len(answering)} of {len(addrs)} inference servers:\n  "
                                            + "\n  ".join(f"{a}: {why}" for a, why in answering.items()))
        await self._lose({a: f"{what}: {failed[a]}; /health does not answer either" for a in unhealthy}, what)

    async def _deadline(self, coro, timeout_s: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{what}: no answer within {timeout_s:g}s") from None

    async def _unhealthy(self, addrs: list[str]) -> list[str]:
        """Those of ``addrs`` whose /health fails or does not answer within ``control_timeout_s``."""
        async def healthy(addr: str) -> bool:
            try:
                return bool(await asyncio.wait_for(self.backend.health(self.http, addr), self._health_timeout_s))
            except Exception:  # noqa: BLE001 - unreachable or silent means unhealthy
                return False

        status = await asyncio.gather(*(healthy(a) for a in addrs))
        return [a for a, ok in zip(addrs, status) if not ok]

    @property
    def _health_timeout_s(self) -> float:
        return min(HEALTH_TIMEOUT_S, self.control_timeout_s)

    async def _lose(self, lost: dict[str, str], what: str) -> None:
        """Restart, drop or raise for lost servers, per ``on_server_lost`` (see "Lost servers")."""
        if self.describe_server is not None:
            lost = {a: f"{why}\n    {self.describe_server(a)}" for a, why in lost.items()}
        detail = "\n  ".join(f"{a}: {why}" for a, why in lost.items())
        if self.on_server_lost == "restart" and self.restart_server is not None:
            log.error("inference server lost; restarting it", lost=list(lost), reason=detail)
            results = await asyncio.gather(*(self._restart(a) for a in lost), return_exceptions=True)
            lost = {a: f"{lost[a]}\n    restart failed: {type(r).__name__}: {r}"  # those cannot come back: dropped
                    for a, r in zip(list(lost), results) if isinstance(r, BaseException)}
            if not lost:
                return
            detail = "\n  ".join(f"{a}: {why}" for a, why in lost.items())
        survivors = [a for a in self.addrs if a not in lost]
        if self.on_server_lost == "stop" or not survivors:
            reason = "rollout.on_server_lost=stop" if survivors else "no inference server is left"
            raise InferenceUnavailableError(f"{what}: lost {len(lost)} of {len(self.addrs)} inference servers "
                                            f"({reason}):\n  {detail}")
        self.addrs = survivors
        self.lost.update(lost)
        for rid in [r for r, a in self._sticky.items() if a in lost]:
            del self._sticky[rid]
        log.error("inference server lost; continuing on the others", lost=list(lost), remaining=survivors,
                  reason=detail)

    async def _restart(self, addr: str) -> None:
        """Start ``addr`` again, bring it to the last pushed weights and version, pause it if the
        others are paused."""
        assert self.restart_server is not None  # _lose restarts only when the scheduler gave one
        await asyncio.to_thread(self.restart_server, addr)
        if self._last_push is not None:
            updater, weights, version = self._last_push
            await self._deadline(updater.push(self.http, [addr], weights, version), self.weight_update_timeout_s,
                                 f"bringing restarted {addr} to version {version}")
        if self._paused:
            await self._deadline(self.backend.pause(self.http, addr), self.control_timeout_s, f"pausing {addr}")
        self._dead_until.pop(addr, None)
        self._stats["restarts"] = self._stats.get("restarts", 0) + 1
        log.warning("inference server back", addr=addr, version=self._last_push[2] if self._last_push else None)

    async def health(self) -> dict[str, bool]:
        """``addr -> healthy`` for every server (an unreachable server is False)."""
        async def one(addr: str) -> bool:
            try:
                return bool(await asyncio.wait_for(self.backend.health(self.http, addr), self._health_timeout_s))
            except Exception:  # noqa: BLE001 - unreachable means unhealthy
                return False

        return dict(zip(self.addrs, await asyncio.gather(*(one(a) for a in self.addrs))))

    async def wait_until_healthy(self, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:
        """Block until every server reports healthy; ArealError naming the ones that never did."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.health()
            if all(status.values()):
                return
            if time.monotonic() > deadline:
                down = [a for a, ok in status.items() if not ok]
                raise InferenceUnavailableError(f"inference servers not healthy after {timeout_s:g}s: {', '.join(down)}")
            await asyncio.sleep(poll_s)

    # ----------------------------------------------------------------- plumbing
    @property
    def http(self) -> Any:
        self._bind_to_running_loop()
        return self._http

    def stats(self) -> dict[str, float]:
        """Counters (requests, rounds, interruptions, failovers, output_tokens), the wall time of the
        last pause / resume / weight update (``pause_s``, ``resume_s``, ``sync_s``) and the bytes
        of the last weight update (``sync_bytes``), and ``busy_s`` (see :meth:`busy_s`)."""
        return dict(self._stats, version=self.weight_version.value, busy_s=self.busy_s())

    async def aclose(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http, self._loop = None, None
