"""What every scheduler needs: ports, children that die with their parent, waiting for freshly
started inference servers, and log tails.

    await wait_healthy(backend, {"10.0.0.2:30001": check_server0, ...}, timeout_s=300,
                       setting="scheduler.server_start_timeout_s", log_tail=tail_of)
    addrs = start_with_port_retries(n, launch, wait_all_healthy, lost_its_port)

Each ``check`` raises ArealError when its process has died (so a crashed server fails the start
at once, not after the timeout); ``log_tail(addr)`` gives the end of a server's log for the
timeout message.

A port from :func:`free_port` is free when drawn but only taken when the server binds it, so
another process can take it in between. :func:`start_with_port_retries` starts a scheduler's
servers and starts one that exited with "address already in use" (:func:`port_taken` on its
log) again on a newly drawn port, ``PORT_RETRIES`` times. A trainer group has no such window:
:func:`host_rendezvous_store` binds its ``MASTER_PORT`` in the process that launches the ranks,
before any starts.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from areal_core.api.protocols import InferenceBackend
from areal_core.auth import auth_headers
from areal_core.config.allocation import Allocation, parse_allocation
from areal_core.errors import ArealError
from areal_core.logging import get_logger

log = get_logger(__name__)
LOG_TAIL_CHARS = 3000
PORT_RETRIES = 3
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|Errno 98\b", re.IGNORECASE)
# Ports free_port hands out: above Ray's worker ports (10002-19999 by default), below the
# kernel's ephemeral range (read from /proc; 32768 on a default Linux).
PORT_FLOOR = 20000
_PORT_DRAW = random.SystemRandom()
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port free on ``host`` now, for a process about to be started to listen on.

    The port is released before the process binds it, so someone else may take it in between.
    What takes ports in that window on a busy node is mostly the kernel handing out ephemeral
    ports (every outgoing connection: HTTP clients, srun's I/O, Ray's gRPC), so the port is
    drawn at random from below the ephemeral range, where the kernel never assigns one, and
    above Ray's worker-port range. When that range is unusable, the OS picks (``bind(0)``).
    ``avoid``: ports already handed to processes not yet started (never returned again).
    """
    low = _ephemeral_low()
    if low - PORT_FLOOR >= 1000:
        # drawn from the OS's entropy, not the global ``random`` that engines seed for
        # reproducibility: seeded, every run on a node would draw the same ports
        for port in _PORT_DRAW.sample(range(PORT_FLOOR, low), 64):
            if port not in avoid and _bindable(host, port):
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def host_rendezvous_store(host: str) -> tuple[Any, dict[str, str]]:
    """A trainer group's rendezvous store (a ``torch.distributed.TCPStore`` server), hosted by this
    process on a port it binds now, and the environment every rank of the group gets.

    The environment is ``MASTER_ADDR`` = ``host``, ``MASTER_PORT`` = the store's port and
    ``TORCHELASTIC_USE_AGENT_STORE=True``: torch's ``env://`` rendezvous then connects every rank
    to this store as a client, as torchrun's agent does, instead of rank 0 binding ``MASTER_PORT``
    itself seconds after it was drawn (when another process may hold it). Keep the store
    referenced until the ranks have exited; one store per group (a relaunched group gets a new one).
    """
    from torch.distributed import TCPStore

    store = TCPStore(host, 0, is_master=True, wait_for_workers=False)
    return store, {"MASTER_ADDR": host, "MASTER_PORT": str(store.port), "TORCHELASTIC_USE_AGENT_STORE": "True"}


def _ephemeral_low() -> int:
    try:
        with open(EPHEMERAL_RANGE_FILE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the OS-picked fallback covers us


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent() -> None:
    """``preexec_fn`` of a child process: ask Linux to SIGKILL it when the process that started it
    dies, even by SIGKILL (``PR_SET_PDEATHSIG``); does nothing elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS, start: int = 0) -> str:
    """The last ``chars`` characters of a process log from byte ``start`` on (for error messages)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


async def wait_healthy(backend: InferenceBackend, checks: Mapping[str, Callable[[], object]], *, timeout_s: float,
                       setting: str, log_tail: Callable[[str], str], poll_s: float = 0.25) -> None:
    """Poll ``backend.health`` for every address until all answer healthy."""
    import httpx

    deadline = time.monotonic() + timeout_s
    pending = dict(checks)
    async with httpx.AsyncClient(timeout=5.0, headers=auth_headers()) as client:
        while pending:
            for addr, check in list(pending.items()):
                check()
                try:
                    ok = await backend.health(client, addr)
                except Exception:  # noqa: BLE001 - not up yet
                    ok = False
                if ok:
                    del pending[addr]
            if not pending:
                return
            if time.monotonic() > deadline:
                addr = next(iter(pending))
                raise ArealError(f"inference server {addr} not healthy after {setting}={timeout_s:g}s; end of its log:\n"
                                 f"{log_tail(addr)}")
            await asyncio.sleep(poll_s)


def port_taken(log: str) -> bool:
    """Whether a server's log says it could not bind its port: another process had taken it."""
    return bool(PORT_TAKEN.search(log))


def start_with_port_retries(n: int, launch: Callable[[int, str | None], str],
                            wait_all_healthy: Callable[[list[str]], None],
                            lost_its_port: Callable[[str], bool]) -> list[str]:
    """Start ``n`` servers and return their addresses once every one is healthy.

    ``launch(i, replacing)`` draws a port, starts server ``i`` on it and returns its ``host:port``;
    ``replacing`` is the address server ``i`` had before (None the first time), whose bookkeeping
    it drops. ``wait_all_healthy(addrs)`` raises ArealError when a server dies or times out.
    ``lost_its_port(addr)``: the server at ``addr`` has exited and its log says its port was
    taken. Those servers are launched again, up to ``PORT_RETRIES`` times; any other failure,
    or the last one, is raised as it came.
    """
    addrs = [launch(i, None) for i in range(n)]
    retries = 0
    while True:
        try:
            wait_all_healthy(addrs)
            return addrs
        except ArealError:
            lost = [i for i, addr in enumerate(addrs) if lost_its_port(addr)]
            if not lost or retries == PORT_RETRIES:
                raise
        retries += 1
        for i in lost:
            old, addrs[i] = addrs[i], launch(i, addrs[i])
            log.warning("inference server lost its port to another process; started it on another",
                        old=old, new=addrs[i])


class ClusterScheduler:
    """What the schedulers that place a run by ``scheduler.allocation`` (ray, slurm) share.

    A subclass sets ``kind`` (its registered name), keeps ``self.config`` (with ``allocation``)
    and ``self.servers`` (server handles), and implements ``stop_all`` and
    ``_check(handles, allow_exit=False) -> exit codes`` (an ArealError for a failed or lost
    process, or, unless ``allow_exit``, any exit).
    """

    kind = "cluster"
    config: Any
    allocation: Allocation | None = None
    servers: list[Any]

    def _read_allocation(self) -> Allocation:
        """Parse ``scheduler.allocation`` (``areal train`` always fills it; see apply_allocation)."""
        if self.config.allocation is None:
            raise ArealError(f"scheduler {self.kind}: scheduler.allocation is unset (areal train fills it from "
                             f"inference.n_servers and scheduler.trainer_ranks)")
        self.allocation = parse_allocation(self.config.allocation)
        return self.allocation

    @property
    def _alloc(self) -> Allocation:
        if self.allocation is None:
            raise ArealError(f"scheduler {self.kind}: prepare(run_dir) must run before processes start")
        return self.allocation

    def wait(self, handles: list[Any], poll_s: float = 1.0) -> None:
        """Until every handle exits 0; a failed or lost process, or a dead server, is an ArealError."""
        while True:
            codes = self._check(handles, allow_exit=True)
            self._check(self.servers)
            if all(c == 0 for c in codes):
                return
            time.sleep(poll_s)

    def _check(self, handles: list[Any], allow_exit: bool = False) -> list[int | None]:
        raise NotImplementedError

    def stop_all(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ClusterScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
