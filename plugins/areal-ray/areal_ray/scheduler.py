"""The ``ray`` scheduler: a run's servers and trainer ranks on a Ray cluster.

    scheduler: {name: ray, address: 10.0.0.1:6379, allocation: "sglang:d2t4+fsdp:d8", device_resource: GPU}

:meth:`RayScheduler.prepare` does every check before a process starts, then reserves the whole
run in one placement group (bundles 0..n-1: servers, ``CPU: cpus_per_server`` + ``t·p`` devices
+ ``server_resources``; then one bundle per trainer rank when ``trainer_ranks`` > 1, rank 1 of a
one-rank run being ``areal train`` itself):

1. reach ``address`` (a TCP connect with ``connect_timeout_s``, then ``ray.init``), or start a
   one-machine cluster when it is unset;
2. the run directory (under ``fileroot``) must be visible from every alive node: a token file
   written by the driver is read back by a task pinned to each node;
3. the cluster's total resources must cover the allocation, and the placement group must be
   placed within ``placement_timeout_s`` (per-node fit, custom resources).

Each process runs under a :class:`~areal_ray.process.ProcessActor` in its bundle; its log is
``RUN_DIR/logs/server-<i>.log`` / ``trainer-<rank>.log``. Addresses are the nodes' own
(``ray.util.get_node_ip_address()`` there): servers listen on their node's address,
``MASTER_ADDR`` is rank 0's node, ``AREAL_HOST_ADDR`` each rank's node. A dead actor or node
becomes an ArealError naming the process, the node and the way back (``recover=auto``).

It is :class:`~areal_core.plugin.SupportsServerStatus`: a lost server's state (pid, signal or exit
status, log tail) is read by its actor on its node, and ``rollout.on_server_lost=restart`` starts
it again under the same actor, at the same address.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from areal_core.plugin import (
    ArealError,
    ClusterScheduler,
    InferenceBackend,
    get_logger,
    log_tail,
    port_taken,
    start_with_port_retries,
    wait_healthy,
)
from areal_ray.config import RaySchedulerConfig
from areal_ray.process import ProcessActor

log = get_logger(__name__)
RECOVER_HINT = "the run resumes from its last checkpoint with `areal train ... recover=auto` once the cluster has room"


@dataclass
class RayProcess:
    """A handle on one process: its actor, node and log."""

    name: str
    actor: Any
    node_id: str
    node_ip: str
    log_path: Path
    log_start: int = 0  # where the current process's output begins in log_path

    def log_tail(self) -> str:
        return log_tail(self.log_path, start=self.log_start)

    def start(self, argv: list[str], env: dict[str, str], timeout_s: float | None = None) -> None:
        """Start ``argv`` under the actor (on its node), its output appended to the log."""
        self.log_start = ray.get(self.actor.start.remote(argv, env, str(self.log_path)), timeout=timeout_s)


class RayScheduler(ClusterScheduler):
    """Implements :class:`areal_core.api.Scheduler` on Ray (see module docstring)."""

    kind = "ray"

    def __init__(self, config: RaySchedulerConfig | None = None):
        self.config = config or RaySchedulerConfig()
        self.log_dir = Path("logs")
        self.servers: list[RayProcess] = []
        self.trainers: list[RayProcess] = []
        # per server address: (process, backend, argv, env), what restart_server starts again
        self._server_launch: dict[str, tuple[RayProcess, InferenceBackend, list[str], dict[str, str]]] = {}
        self._pg: Any = None  # the placement group, once placed
        self._connected = False

    # ------------------------------------------------------------------ Scheduler protocol
    def prepare(self, run_dir: Path) -> None:
        """Connect, check the shared run dir and the resources, reserve the run (module docstring)."""
        self.log_dir = Path(run_dir) / "logs"
        self._read_allocation()
        self._connect()
        try:
            self._check_run_dir_visible(Path(run_dir))
            self._reserve()
        except BaseException:
            self.stop_all()
            raise

    def start_inference_servers(self, backend: InferenceBackend, model_path: str, n: int,
                                env: dict[str, str] | None = None) -> list[str]:
        """Start the allocation's ``n`` servers, each in its bundle; ``host:port`` once healthy. A
        server whose port was taken before it bound it starts again under its actor on another."""
        self._expect("inference servers", n, self._alloc.n_servers)
        server_env = {**self._forwarded(), **(env or {})}

        def launch(i: int, replacing: str | None) -> str:
            if replacing is None:
                proc, port = self._place(f"server-{i}", i, self.config.cpus_per_server)
                self.servers.append(proc)
            else:
                proc = self._server_launch.pop(replacing)[0]
                port = ray.get(proc.actor.where.remote())[2]
            addr = f"{proc.node_ip}:{port}"
            argv = backend.server_command(model_path, proc.node_ip, port)
            proc.start(argv, server_env)
            self._server_launch[addr] = (proc, backend, argv, server_env)
            return addr

        def wait_all_healthy(addrs: list[str]) -> None:
            self._wait_healthy(backend, {a: self._server_launch[a][0] for a in addrs})

        addrs = start_with_port_retries(n, launch, wait_all_healthy, self._lost_its_port)
        log.info("inference servers ready", addrs=addrs, nodes=[p.node_id[:8] for p in self.servers])
        return addrs

    def _lost_its_port(self, addr: str) -> bool:
        """Whether the server at ``addr`` exited because another process had bound its port."""
        proc = self._server_launch[addr][0]
        try:
            exited = ray.get(proc.actor.poll.remote(), timeout=60) is not None
        except (RayActorError, GetTimeoutError):
            return False
        return exited and port_taken(proc.log_tail())

    # ------------------------------------------------------------------ SupportsServerStatus
    def describe_server(self, addr: str) -> str:
        """``server-0 IP:PORT (pid N on Ray node IP) was killed by SIGKILL; end of LOG: ...`` (the log
        tail when it is not running), or that its actor or node is lost."""
        if addr not in self._server_launch:
            return f"{addr} was not started by this scheduler"
        proc = self._server_launch[addr][0]
        where = f"Ray node {proc.node_ip} ({proc.node_id[:8]})"
        try:
            pid, status, running = ray.get(proc.actor.describe.remote(), timeout=30)
        except (RayActorError, GetTimeoutError) as exc:
            return f"{proc.name} {addr} on {where} is lost ({type(exc).__name__}); end of {proc.log_path}:\n{proc.log_tail()}"
        line = f"{proc.name} {addr} (pid {pid} on {where}) {status}"
        return line if running else f"{line}; end of {proc.log_path}:\n{proc.log_tail()}"

    def restart_server(self, addr: str) -> None:
        """Start the server at ``addr`` again under its actor (same node, port, command and
        environment), killing what is left of it; returns once it is healthy. A lost actor or node
        cannot give the same address back: an ArealError."""
        proc, backend, argv, env = self._server_launch[addr]
        try:
            ray.get(proc.actor.stop.remote(self.config.stop_timeout_s), timeout=self.config.stop_timeout_s + 30)
            proc.start(argv, env, timeout_s=60)
        except (RayActorError, GetTimeoutError) as exc:
            raise ArealError(f"cannot restart {proc.name} {addr}: its actor on Ray node {proc.node_ip} is lost "
                             f"({type(exc).__name__}); {RECOVER_HINT}") from None
        self._wait_healthy(backend, {addr: proc})
        log.warning("inference server restarted", addr=addr, node=proc.node_id[:8])

    def _wait_healthy(self, backend: InferenceBackend, by_addr: dict[str, RayProcess]) -> None:
        checks = {a: functools.partial(self._check, [p]) for a, p in by_addr.items()}
        asyncio.run(wait_healthy(backend, checks, timeout_s=self.config.server_start_timeout_s,
                                 setting="scheduler.server_start_timeout_s", log_tail=lambda a: by_addr[a].log_tail()))

    def launch_trainers(self, argv: list[str], ranks: int, env: dict[str, str]) -> list[RayProcess]:
        """``ranks`` trainer processes in their bundles, torchrun-style env from their real nodes."""
        self._expect("trainer ranks", ranks, self._alloc.trainer_ranks)
        first = self._alloc.n_servers
        placed = [self._place(f"trainer-{r}", first + r, self.config.cpus_per_trainer) for r in range(ranks)]
        rendezvous = ray.get(placed[0][0].actor.serve_rendezvous_store.remote())  # rank 0's actor: its port is bound
        per_node: dict[str, list[int]] = {}
        for r, (proc, _) in enumerate(placed):
            per_node.setdefault(proc.node_id, []).append(r)
        starts = []
        for r, (proc, _) in enumerate(placed):
            local = per_node[proc.node_id]
            rank_env = {**self._forwarded(), **env, "RANK": str(r), "LOCAL_RANK": str(local.index(r)),
                        "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(len(local)), **rendezvous,
                        "AREAL_HOST_ADDR": proc.node_ip}
            starts.append(proc.actor.start.remote(argv, rank_env, str(proc.log_path)))
            self.trainers.append(proc)
        for (proc, _), log_start in zip(placed, ray.get(starts)):
            proc.log_start = log_start
        log.info("trainer ranks started", ranks=ranks, master=f"{rendezvous['MASTER_ADDR']}:{rendezvous['MASTER_PORT']}",
                 nodes=[p.node_id[:8] for p, _ in placed])
        return [p for p, _ in placed]

    def host_addr(self) -> str:
        """This (driver's) node's address as Ray sees it."""
        return ray.util.get_node_ip_address()

    def stop_all(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), kill the actors, free the placement group. Idempotent."""
        procs, self.servers, self.trainers = self.trainers + self.servers, [], []
        self._server_launch = {}
        if procs:
            refs = [p.actor.stop.remote(self.config.stop_timeout_s) for p in procs]
            try:
                ray.get(refs, timeout=self.config.stop_timeout_s + 10)
            except RayError:
                pass  # an actor already gone took its process with it (PDEATHSIG)
            for p in procs:
                ray.kill(p.actor)
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None
        if self._connected:
            ray.shutdown()
            self._connected = False

    # ------------------------------------------------------------------ preparation
    def _connect(self) -> None:
        if ray.is_initialized():
            return  # a caller's own connection: used, and left open
        address = self.config.address
        if address is None:
            ray.init(num_cpus=self.config.num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ArealError(f"scheduler.address={address!r} is not HOST:PORT (the head's GCS port)")
            try:
                socket.create_connection((host, int(port)), timeout=self.config.connect_timeout_s).close()
            except OSError as exc:
                raise ArealError(f"scheduler.address={address!r}: no Ray head answers there ({exc}); start one with "
                                 f"`ray start --head --port={port}` or fix the address") from None
            ray.init(address=address, log_to_driver=False)
        self._connected = True

    def _check_run_dir_visible(self, run_dir: Path) -> None:
        token = run_dir / f".ray-visible-{uuid.uuid4().hex}"
        token.write_text(token.name)
        try:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            refs = [_read_token.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(token)) for n in nodes]
            seen = ray.get(refs, timeout=self.config.placement_timeout_s)
        finally:
            token.unlink()
        blind = [f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]})" for n, ok in zip(nodes, seen) if ok != token.name]
        if blind:
            raise ArealError(f"fileroot: the run directory {run_dir} is not visible from Ray node(s) {', '.join(blind)}; "
                             f"fileroot must be storage every node mounts at the same path (NFS, a shared volume)")

    def _reserve(self) -> None:
        alloc, cfg = self._alloc, self.config
        available = ray.cluster_resources()
        where = f"the Ray cluster ({self.config.address or 'local'})"
        alloc.require("CPUs", available.get("CPU", 0), where, lambda c: self._cpus_of(c.role))
        if cfg.device_resource:
            alloc.require(f"{cfg.device_resource}s", available.get(cfg.device_resource, 0), where,
                          lambda c: c.devices_per_process if self._placed(c.role) else 0)
        bundles = [self._bundle(cfg.cpus_per_server, alloc.role("inference").devices_per_process,
                                cfg.server_resources) for _ in range(alloc.n_servers)]
        if alloc.trainer_ranks > 1:
            bundles += [self._bundle(cfg.cpus_per_trainer, 1, cfg.trainer_resources) for _ in range(alloc.trainer_ranks)]
        for key in {k for b in bundles for k in b}:
            need = sum(b.get(key, 0) for b in bundles)
            if need > available.get(key, 0):
                raise ArealError(f"scheduler.allocation {alloc.spec()!r} asks for {need:g} of Ray resource {key!r} "
                                 f"but {where} has {available.get(key, 0):g} (nodes declare it with `ray start "
                                 f"--resources`)")
        self._pg = placement_group(bundles, strategy=cfg.placement_strategy, name=f"areal-{uuid.uuid4().hex[:8]}")
        try:
            ray.get(self._pg.ready(), timeout=cfg.placement_timeout_s)
        except GetTimeoutError:
            raise ArealError(f"scheduler ray: could not place {bundles} ({cfg.placement_strategy}) within "
                             f"scheduler.placement_timeout_s={cfg.placement_timeout_s:g}s; per node: "
                             f"{_node_summary()}") from None
        log.info("ray placement group ready", bundles=len(bundles), strategy=cfg.placement_strategy)

    def _bundle(self, cpus: float, devices: int, extra: dict[str, float]) -> dict[str, float]:
        bundle = {"CPU": cpus, **extra}
        if self.config.device_resource:
            bundle[self.config.device_resource] = devices
        return {k: v for k, v in bundle.items() if v > 0}

    # ------------------------------------------------------------------ processes
    def _place(self, name: str, bundle: int, cpus: float) -> tuple[RayProcess, int]:
        if self._pg is None:
            raise ArealError("scheduler ray: prepare(run_dir) must run before processes start")
        devices = self._pg.bundle_specs[bundle].get(self.config.device_resource or "GPU", 0)
        actor: Any = ray.remote(ProcessActor).options(
            num_cpus=cpus, num_gpus=devices if self.config.device_resource == "GPU" else 0, name=None,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=bundle),
        ).remote()
        node_id, ip, port = ray.get(actor.where.remote())
        return RayProcess(name, actor, node_id, ip, self.log_dir / f"{name}.log"), port

    def _check(self, procs: list[RayProcess], allow_exit: bool = False) -> list[int | None]:
        """Exit codes; ArealError for a dead actor/node, a failed exit, or (unless allow_exit) any exit."""
        codes = []
        for p in procs:
            try:
                code = ray.get(p.actor.poll.remote(), timeout=60)
            except (RayActorError, GetTimeoutError) as exc:
                raise ArealError(f"{p.name} on Ray node {p.node_ip} ({p.node_id[:8]}) is lost: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                                 f"{RECOVER_HINT}. End of {p.log_path}:\n{p.log_tail()}") from None
            if code not in (None, 0) or (code is not None and not allow_exit):
                raise ArealError(f"{p.name} on Ray node {p.node_ip} exited with status {code}; "
                                 f"end of {p.log_path}:\n{p.log_tail()}")
            codes.append(code)
        return codes

    # ------------------------------------------------------------------ small helpers
    def _expect(self, what: str, n: int, planned: int) -> None:
        if n != planned:
            raise ArealError(f"scheduler ray: asked for {n} {what} but scheduler.allocation "
                             f"{self._alloc.spec()!r} reserved {planned}")

    def _placed(self, role: str | None) -> bool:
        return role == "inference" or self._alloc.trainer_ranks > 1

    def _cpus_of(self, role: str | None) -> float:
        if not self._placed(role):
            return 0.0
        return self.config.cpus_per_server if role == "inference" else self.config.cpus_per_trainer

    def _forwarded(self) -> dict[str, str]:
        prefixes = tuple(self.config.forward_env)
        return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


@ray.remote(num_cpus=0)
def _read_token(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _node_summary() -> str:
    return "; ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]}): "
                     f"{ {k: v for k, v in n['Resources'].items() if not k.startswith(('node:', 'memory', 'object'))} }"
                     for n in ray.nodes() if n["Alive"])
