"""The ``local`` scheduler: every process of a run as a subprocess on this machine.

    scheduler = LocalScheduler(LocalSchedulerConfig(name="local"))
    scheduler.prepare(run_dir)                                                # logs: run_dir/logs
    with scheduler:
        addrs = scheduler.start_inference_servers(backend, model_path, n=2)   # waits for /health
        procs = scheduler.launch_trainers(argv, ranks=2, env={})              # trainer ranks
        scheduler.wait(procs)

Each process writes stdout+stderr to ``<log_dir>/<name>-<i>.log``. No orphans:

* children start in their own session (a Ctrl-C in the terminal reaches only the driver, which
  then stops them in order) and, on Linux, with ``PR_SET_PDEATHSIG = SIGKILL``: if the driver
  dies, even by SIGKILL, the kernel kills them;
* :meth:`LocalScheduler.stop_all` (also on ``with`` exit and at interpreter exit) sends SIGTERM
  to each child's process group, waits ``stop_timeout_s``, then SIGKILLs what is left.

Servers get free ports on ``host``. A port is free when drawn but only taken when the server
binds it, so another process can take it in between: a server that exits while starting with
"address already in use" in its log is started again on another port
(:func:`~areal_core.launcher.support.start_with_port_retries`).
A server that exits while starting for any other reason, or is not healthy after
``server_start_timeout_s``, fails the start with an ArealError quoting the end of its log.
Trainer ranks rendezvous at a store this process serves on a port it bound before they started
(:func:`~areal_core.launcher.support.host_rendezvous_store`): no port to lose.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from areal_core.api.protocols import InferenceBackend
from areal_core.config.base import SchedulerConfigBase
from areal_core.errors import ArealError
from areal_core.launcher.liveness import describe_status
from areal_core.launcher.support import (
    LOG_TAIL_CHARS,
    die_with_parent,
    free_port,
    host_rendezvous_store,
    log_tail,
    port_taken,
    start_with_port_retries,
    wait_healthy,
)
from areal_core.logging import get_logger

log = get_logger(__name__)
LOST_LOG_TAIL_CHARS = 1000


class LocalSchedulerConfig(SchedulerConfigBase):
    """Options of the ``local`` scheduler (``scheduler:`` section of the run config)."""

    name: str = Field("local", description="registered name of the scheduler")
    host: str = Field("127.0.0.1", description="address the inference servers and the trainer listen on")
    server_start_timeout_s: float = Field(300.0, gt=0, description="wait at most this long for a server's /health")
    stop_timeout_s: float = Field(10.0, gt=0, description="after SIGTERM, wait this long before SIGKILL")
    server_visible_devices: list[str] = Field(
        default_factory=list, description="CUDA_VISIBLE_DEVICES of server i is item i mod len (empty: inherited)")
    trainer_visible_devices: str | None = Field(None, description="CUDA_VISIBLE_DEVICES of the trainer ranks (unset: inherited)")


@dataclass
class LocalProcess:
    """A handle on one launched process."""

    name: str
    index: int
    popen: subprocess.Popen
    log_path: Path
    log_start: int = 0  # where this process's output begins in log_path (a restart appends to the file)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of what this process wrote (not what an earlier process of the same name did)."""
        return log_tail(self.log_path, chars, start=self.log_start)


class LocalScheduler:
    """Implements :class:`areal_core.api.Scheduler` with subprocesses (see module docstring)."""

    def __init__(self, config: LocalSchedulerConfig | None = None, log_dir: str | Path | None = None):
        self.config = config or LocalSchedulerConfig()
        self.log_dir = Path(log_dir) if log_dir is not None else Path("logs")
        self.processes: list[LocalProcess] = []
        self.servers: dict[str, LocalProcess] = {}  # inference servers by address
        self._server_launch: dict[str, tuple[InferenceBackend, list[str], dict[str, str]]] = {}
        self._stores: list[Any] = []  # the trainer groups' rendezvous stores, served while this scheduler lives
        atexit.register(self.stop_all)

    # ------------------------------------------------------------------ Scheduler protocol
    def prepare(self, run_dir: Path) -> None:
        """Process logs go to ``run_dir/logs``; one machine has nothing else to check."""
        self.log_dir = Path(run_dir) / "logs"

    def host_addr(self) -> str:
        return self.config.host

    def launch_trainers(self, argv: list[str], ranks: int, env: dict[str, str]) -> list[LocalProcess]:
        """``ranks`` trainer processes on this machine; this process hosts the group's store
        (:func:`~areal_core.launcher.support.host_rendezvous_store`), so its port is bound before they start."""
        store, rendezvous = host_rendezvous_store(self.config.host)
        self._stores.append(store)
        common = {**env, "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), **rendezvous,
                  "AREAL_HOST_ADDR": self.config.host}
        if self.config.trainer_visible_devices is not None:
            common["CUDA_VISIBLE_DEVICES"] = self.config.trainer_visible_devices
        return self.launch("trainer", argv, common, count=ranks,
                           envs=[{"RANK": str(r), "LOCAL_RANK": str(r)} for r in range(ranks)])

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None, count: int = 1,
               envs: list[dict[str, str]] | None = None) -> list[LocalProcess]:
        """Start ``count`` copies of ``argv``; ``env`` is added to this process's environment
        (``envs[i]`` too, for copy i). Logs go to ``<log_dir>/<name>-<i>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for i in range(count):
            full_env = {**os.environ, **(env or {}), **(envs[i] if envs else {})}
            log_path = self.log_dir / f"{name}-{i}.log"
            with open(log_path, "ab") as out:
                log_start = out.tell()
                try:
                    popen = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
                                             preexec_fn=die_with_parent)
                except OSError as exc:
                    raise ArealError(f"scheduler local: cannot start {name} ({argv[0]!r}): {exc}") from None
            proc = LocalProcess(name, i, popen, log_path, log_start)
            self.processes.append(proc)
            started.append(proc)
            log.info("started process", name=f"{name}-{i}", pid=popen.pid, log=str(log_path))
        return started

    def stop_all(self) -> None:
        """SIGTERM every live child's process group, wait, SIGKILL the rest. Idempotent."""
        live = [p for p in self.processes if p.alive()]
        for p in live:
            self._signal(p, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for p in live:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                p.popen.wait()
        self.processes = [p for p in self.processes if p.alive()]
        self._stores.clear()  # their ranks are gone: free the ports

    def start_inference_servers(self, backend: InferenceBackend, model_path: str, n: int,
                                env: dict[str, str] | None = None) -> list[str]:
        """Start ``n`` servers of ``backend`` on free ports; return their ``host:port`` once healthy."""

        def launch(i: int, replacing: str | None) -> str:
            if replacing is not None:
                del self.servers[replacing], self._server_launch[replacing]
            taken = [int(a.rpartition(":")[2]) for a in self.servers]
            return self._launch_server(i, backend, model_path, free_port(self.config.host, avoid=taken), env)

        def wait_all_healthy(addrs: list[str]) -> None:
            asyncio.run(self._wait_healthy(backend, [(a, self.servers[a]) for a in addrs]))

        addrs = start_with_port_retries(n, launch, wait_all_healthy, self._lost_its_port)
        log.info("inference servers ready", addrs=addrs)
        return addrs

    def _launch_server(self, i: int, backend: InferenceBackend, model_path: str, port: int,
                       env: dict[str, str] | None) -> str:
        host = self.config.host
        server_env = dict(env or {})
        if devices := self.config.server_visible_devices:
            server_env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        argv = backend.server_command(model_path, host, port)
        (proc,) = self.launch(f"server{i}", argv, server_env)
        self.servers[f"{host}:{port}"] = proc
        self._server_launch[f"{host}:{port}"] = (backend, argv, server_env)
        return f"{host}:{port}"

    def _lost_its_port(self, addr: str) -> bool:
        """Whether the server at ``addr`` exited because another process had bound its port."""
        proc = self.servers[addr]
        return not proc.alive() and port_taken(proc.log_tail())

    def describe_server(self, addr: str) -> str:
        """``server0 127.0.0.1:PORT (pid N) was killed by SIGKILL; end of LOG: ...`` (the log tail
        only when the process is not running)."""
        p = self.servers.get(addr)
        if p is None:
            return f"{addr} was not started by this scheduler"
        code = p.popen.poll()
        line = f"{p.name} {addr} (pid {p.pid}) {describe_status(p.pid, code)}"
        if code is None:
            return line
        return f"{line}; end of {p.log_path}:\n{p.log_tail(LOST_LOG_TAIL_CHARS)}"

    def restart_server(self, addr: str) -> None:
        """Start the server at ``addr`` again (killing what is left of it), same command, port and
        environment; returns once it is healthy. It serves the weights it started with."""
        backend, argv, env = self._server_launch[addr]
        old = self.servers[addr]
        if old.alive():
            self._signal(old, signal.SIGKILL)
            old.popen.wait()
        (new,) = self.launch(old.name, argv, env)
        self.servers[addr] = new
        asyncio.run(self._wait_healthy(backend, [(addr, new)]))
        log.warning("inference server restarted", addr=addr, pid=new.pid)

    def check_alive(self, procs: list[LocalProcess]) -> None:
        """ArealError naming the first of ``procs`` that has exited, with its log tail."""
        for p in procs:
            if not p.alive():
                raise ArealError(f"{p.name}-{p.index} (pid {p.pid}) exited with status {p.popen.returncode}; "
                                 f"end of {p.log_path}:\n{p.log_tail()}")

    def wait(self, procs: list[LocalProcess], poll_s: float = 0.5) -> None:
        """Block until every process in ``procs`` exits with status 0; on the first failure stop
        the others and raise an ArealError with its log tail."""
        while True:
            codes = [p.popen.poll() for p in procs]
            for p, code in zip(procs, codes):
                if code not in (None, 0):
                    raise ArealError(f"{p.name}-{p.index} (pid {p.pid}) failed with status {code}; "
                                     f"end of {p.log_path}:\n{p.log_tail()}")
            if all(c == 0 for c in codes):
                return
            time.sleep(poll_s)

    async def _wait_healthy(self, backend: InferenceBackend, servers: list[tuple[str, LocalProcess]]) -> None:
        by_addr = dict(servers)
        await wait_healthy(backend, {a: functools.partial(self.check_alive, [p]) for a, p in by_addr.items()},
                           timeout_s=self.config.server_start_timeout_s, setting="scheduler.server_start_timeout_s",
                           log_tail=lambda a: f"({by_addr[a].log_path})\n{by_addr[a].log_tail()}")

    def _signal(self, p: LocalProcess, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            p.popen.send_signal(sig)

    def __enter__(self) -> LocalScheduler:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
