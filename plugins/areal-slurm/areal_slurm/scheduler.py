"""The ``slurm`` scheduler: one sbatch job holds the run's nodes; every process is an srun step.

    scheduler: {name: slurm, partition: gpu, nodes: 2, gpus_per_node: 8, allocation: "sglang:d4t2+fsdp:d8"}

:meth:`SlurmScheduler.prepare` checks before anything is submitted: the Slurm commands exist,
the partition exists, and it has the CPUs the allocation asks for. It then renders the job
script (``RUN_DIR/slurm/job.sh``: the ``#SBATCH`` header, the planned steps as comments, and a
body that just holds the allocation) and submits it with ``sbatch`` -- or, with
``scheduler.dry_run=true``, prints it and exits without submitting. Run ``areal train`` inside an
allocation (``salloc``, or an sbatch script) and that job is used instead.

Each server and trainer rank is then a step of the job, started from the driver::

    srun --jobid=JOB --overlap --nodes=1 --ntasks=1 --cpus-per-task=C --nodelist=NODE --kill-on-bad-exit=1 ARGV

(the step inherits the driver's environment plus the process's own variables; its output goes
to ``RUN_DIR/logs/<name>.log``). Addresses are the nodes' ``NodeAddr``; servers' free ports are probed on
the node by a short step (``free_port`` there); the trainer ranks' rendezvous store is served by the driver. On any failure, and at the end, ``scancel`` ends the job's steps and
the job (a job the driver did not submit keeps running; only its steps are cancelled).

It is :class:`~areal_core.plugin.SupportsServerStatus`: ``describe_server`` reports a server's
step (its srun client ends with it), and ``rollout.on_server_lost=restart`` starts a new step on
the same node with the same command and port.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from areal_core.plugin import (
    ArealError,
    ClusterScheduler,
    InferenceBackend,
    describe_status,
    get_logger,
    host_rendezvous_store,
    log_tail,
    port_taken,
    start_with_port_retries,
    wait_healthy,
)
from areal_slurm.config import SlurmSchedulerConfig

log = get_logger(__name__)
COMMANDS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
PORT_PROBE = "from areal_core.plugin import free_port\nprint(free_port({host!r}))"


@dataclass
class SlurmStep:
    """One srun step: the srun client running on the driver, the node its task runs on, its log."""

    name: str
    popen: subprocess.Popen
    node: str
    log_path: Path
    log_start: int = 0  # where this step's output begins in log_path (a restart appends to the file)

    def log_tail(self) -> str:
        return log_tail(self.log_path, start=self.log_start)


class SlurmScheduler(ClusterScheduler):
    """Implements :class:`areal_core.api.Scheduler` with sbatch + srun (see module docstring)."""

    kind = "slurm"

    def __init__(self, config: SlurmSchedulerConfig | None = None):
        self.config = config or SlurmSchedulerConfig()
        self.log_dir = Path("logs")
        self.job_id: str | None = None
        self.nodes: list[str] = []
        self.steps: list[SlurmStep] = []
        self.servers: list[SlurmStep] = []
        # per server address: (its step, backend, argv, env), what restart_server starts again
        self._server_launch: dict[str, tuple[SlurmStep, InferenceBackend, list[str], dict[str, str]]] = {}
        self._submitted = False
        self._next_node = 0
        self._stores: list[Any] = []  # the trainer groups' rendezvous stores, served by this driver

    # ------------------------------------------------------------------ Scheduler protocol
    def prepare(self, run_dir: Path) -> None:
        """Check the cluster, render the job script, submit it (or print it: dry_run) and wait for it to run."""
        run_dir = Path(run_dir)
        self.log_dir = run_dir / "logs"
        self._read_allocation()
        script = self.render(run_dir)
        if self.config.dry_run:
            print(script)
            print("# scheduler.dry_run=true: nothing submitted")
            sys.exit(0)
        missing = [c for c in COMMANDS if shutil.which(c) is None]
        if missing:
            raise ArealError(f"scheduler slurm: {', '.join(missing)} not found on PATH (run `areal train` on a "
                             f"Slurm login node or inside an allocation)")
        self._check_partition()
        if os.environ.get("SLURM_JOB_ID"):
            self.job_id = os.environ["SLURM_JOB_ID"]
            log.info("using the enclosing slurm job", job_id=self.job_id)
        else:
            path = run_dir / "slurm" / "job.sh"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)  # the job's --output goes there
            path.write_text(script)
            self.job_id = _run(["sbatch", "--parsable", str(path)]).strip().split(";")[0]
            self._submitted = True
            log.info("submitted slurm job", job_id=self.job_id, script=str(path))
        try:
            self.nodes = self._wait_running()
        except BaseException:
            self.stop_all()
            raise

    def render(self, run_dir: Path) -> str:
        """The sbatch script of this run (header from the config and allocation; steps as comments)."""
        alloc, cfg = self._alloc, self.config
        ntasks = alloc.n_servers + alloc.trainer_ranks
        opts = [f"--job-name=areal-{run_dir.parent.name}-{run_dir.name}", f"--nodes={cfg.nodes}",
                f"--ntasks={ntasks}", f"--cpus-per-task={max(cfg.cpus_per_server, cfg.cpus_per_trainer)}",
                f"--time={cfg.time_limit}", f"--output={run_dir / 'logs' / 'slurm-job-%j.log'}"]
        opts += [f"--{k}={v}" for k, v in (("partition", cfg.partition), ("account", cfg.account), ("qos", cfg.qos)) if v]
        if cfg.gpus_per_node:
            opts.append(f"--gpus-per-node={cfg.gpus_per_node}")
        opts += cfg.extra_sbatch
        inference, actor = alloc.role("inference"), alloc.role("actor")
        lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in opts), "",
                 f"# areal run {run_dir} (scheduler.allocation {alloc.spec()!r}).",
                 "# This job holds the nodes; `areal train` runs each process as a step of it:",
                 f"#   {inference.processes} x srun --jobid=$SLURM_JOB_ID --overlap --nodes=1 --ntasks=1 "
                 f"--cpus-per-task={cfg.cpus_per_server} --nodelist=NODE <{inference.backend} server command>",
                 f"#   {alloc.trainer_ranks if alloc.trainer_ranks > 1 else 0} x srun --jobid=$SLURM_JOB_ID --overlap "
                 f"--nodes=1 --ntasks=1 --cpus-per-task={cfg.cpus_per_trainer} --nodelist=NODE python -m "
                 f"areal_core.trainer.entry --rank-of {run_dir}   ({actor.backend} ranks; 1 rank runs in the driver)",
                 "# The driver scancels the job when the run ends or fails.",
                 "exec sleep 2147483647", ""]
        return "\n".join(lines)

    def start_inference_servers(self, backend: InferenceBackend, model_path: str, n: int,
                                env: dict[str, str] | None = None) -> list[str]:
        """``n`` server steps, filling the job's nodes in order; ``host:port`` once healthy. A server
        whose port was taken before it bound it starts again as a new step on its node, on another."""

        def launch(i: int, replacing: str | None) -> str:
            if replacing is None:
                node = self._node_for(self.config.cpus_per_server)
            else:
                old = self._server_launch.pop(replacing)[0]
                node = old.node
            host = self._address(node)
            port = self._free_port(node, host)
            argv = backend.server_command(model_path, host, port)
            step = self._srun(f"server-{i}", node, self.config.cpus_per_server, argv, env or {})
            if replacing is None:
                self.servers.append(step)
            else:
                self.servers[self.servers.index(old)] = step
            self._server_launch[f"{host}:{port}"] = (step, backend, argv, dict(env or {}))
            return f"{host}:{port}"

        def wait_all_healthy(addrs: list[str]) -> None:
            self._wait_healthy(backend, {a: self._server_launch[a][0] for a in addrs})

        def lost_its_port(addr: str) -> bool:
            step = self._server_launch[addr][0]
            return step.popen.poll() is not None and port_taken(step.log_tail())

        addrs = start_with_port_retries(n, launch, wait_all_healthy, lost_its_port)
        log.info("inference servers ready", addrs=addrs, job_id=self.job_id)
        return addrs

    # ------------------------------------------------------------------ SupportsServerStatus
    def describe_server(self, addr: str) -> str:
        """``server-0 IP:PORT (slurm job J, node N, srun pid P) exited with status 137; end of LOG: ...``
        (the step's srun client stands for it: it ends with the server; the log tail when it has)."""
        if addr not in self._server_launch:
            return f"{addr} was not started by this scheduler"
        step = self._server_launch[addr][0]
        code = step.popen.poll()
        line = (f"{step.name} {addr} (slurm job {self.job_id}, node {step.node}, srun pid {step.popen.pid}) "
                f"{describe_status(step.popen.pid, code)}")
        return line if code is None else f"{line}; end of {step.log_path}:\n{step.log_tail()}"

    def restart_server(self, addr: str) -> None:
        """End what is left of the server's step, start a new step on the same node with the same
        command (same port) and environment; returns once it is healthy."""
        if addr not in self._server_launch:
            raise ArealError(f"scheduler slurm: {addr} was not started by this scheduler")
        old, backend, argv, env = self._server_launch[addr]
        _stop_client(old, self.config.stop_timeout_s)
        new = self._srun(old.name, old.node, self.config.cpus_per_server, argv, env)
        self.servers[self.servers.index(old)] = new
        self._server_launch[addr] = (new, backend, argv, env)
        self._wait_healthy(backend, {addr: new})
        log.warning("inference server restarted", addr=addr, node=new.node, job_id=self.job_id)

    def _wait_healthy(self, backend: InferenceBackend, by_addr: dict[str, SlurmStep]) -> None:
        checks = {a: functools.partial(self._check, [s]) for a, s in by_addr.items()}
        asyncio.run(wait_healthy(backend, checks, timeout_s=self.config.server_start_timeout_s,
                                 setting="scheduler.server_start_timeout_s", log_tail=lambda a: by_addr[a].log_tail()))

    def launch_trainers(self, argv: list[str], ranks: int, env: dict[str, str]) -> list[SlurmStep]:
        """One step per rank, ``AREAL_HOST_ADDR`` each rank's node. The group's rendezvous store is
        served by this driver at :meth:`host_addr` (the address the job's nodes already reach it at),
        on a port bound before any step starts (``host_rendezvous_store``)."""
        nodes = [self._node_for(self.config.cpus_per_trainer) for _ in range(ranks)]
        store, rendezvous = host_rendezvous_store(self.host_addr())
        self._stores.append(store)
        handles = []
        for r, node in enumerate(nodes):
            local = [i for i, n in enumerate(nodes) if n == node]
            rank_env = {**env, "RANK": str(r), "LOCAL_RANK": str(local.index(r)), "WORLD_SIZE": str(ranks),
                        "LOCAL_WORLD_SIZE": str(len(local)), **rendezvous, "AREAL_HOST_ADDR": self._address(node)}
            handles.append(self._srun(f"trainer-{r}", node, self.config.cpus_per_trainer, argv, rank_env))
        log.info("trainer ranks started", ranks=ranks, job_id=self.job_id,
                 master=f"{rendezvous['MASTER_ADDR']}:{rendezvous['MASTER_PORT']}")
        return handles

    def host_addr(self) -> str:
        """The driver's address on the route to the job's first node (what that node connects to)."""
        if not self.nodes:
            raise ArealError("scheduler slurm: prepare(run_dir) must run before host_addr()")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((self._address(self.nodes[0]), 9))  # UDP: no packet is sent, the route is chosen
            return s.getsockname()[0]

    def stop_all(self) -> None:
        """Cancel the job's steps (and the job, when this driver submitted it); stop the srun clients."""
        if self.job_id is not None:
            targets = [self.job_id] if self._submitted else _step_ids(self.job_id)
            if targets:
                subprocess.run(["scancel", *targets], capture_output=True, check=False)
                _wait_gone(targets, self.config.stop_timeout_s + 20)
            if self._submitted:
                log.info("cancelled slurm job", job_id=self.job_id)
            self.job_id = None
        for step in self.steps:
            if step.popen.poll() is None:
                step.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for step in self.steps:
            _stop_client(step, max(0.0, deadline - time.monotonic()))
        self.steps, self.servers, self._server_launch, self._stores = [], [], {}, []

    # ------------------------------------------------------------------ cluster queries
    def _check_partition(self) -> None:
        alloc, cfg = self._alloc, self.config
        names = _run(["sinfo", "-h", "-o", "%P"]).split()
        default = next((p.rstrip("*") for p in names if p.endswith("*")), None)
        known = [p.rstrip("*") for p in names]
        partition = cfg.partition or default
        if partition is None or partition not in known:
            raise ArealError(f"scheduler.partition={cfg.partition!r}: no such partition on this Slurm cluster "
                             f"(partitions: {', '.join(known) or 'none'})")
        info = _run(["scontrol", "show", "partition", partition, "-o"])
        total, nodes = _field(info, "TotalCPUs", partition), _field(info, "TotalNodes", partition)
        if cfg.nodes > nodes:
            raise ArealError(f"scheduler.nodes={cfg.nodes} but partition {partition!r} has {nodes} node(s)")
        ranks_placed = alloc.trainer_ranks > 1
        alloc.require("CPUs", total, f"partition {partition!r}", lambda c: cfg.cpus_per_server if c.role == "inference"
                      else (cfg.cpus_per_trainer if ranks_placed else 0))

    def _wait_running(self) -> list[str]:
        deadline = time.monotonic() + self.config.job_start_timeout_s
        while True:
            state, reason, nodelist = (_run(["squeue", "-h", "-j", str(self.job_id), "-o", "%T|%r|%N"]).strip() or "GONE||").split("|")
            if state == "RUNNING":
                return _run(["scontrol", "show", "hostnames", nodelist]).split()
            if state not in ("PENDING", "CONFIGURING"):
                job_log = self.log_dir / f"slurm-job-{self.job_id}.log"
                tail = log_tail(job_log)
                raise ArealError(f"slurm job {self.job_id} is {state} ({reason or 'ended'}) before the run started; "
                                 f"end of {job_log}:\n{tail}")
            if time.monotonic() > deadline:
                raise ArealError(f"slurm job {self.job_id} still {state} ({reason}) after "
                                 f"scheduler.job_start_timeout_s={self.config.job_start_timeout_s:g}s; cancelled")
            time.sleep(0.5)

    def _address(self, node: str) -> str:
        info = _run(["scontrol", "show", "node", node, "-o"])
        m = re.search(r"\bNodeAddr=(\S+)", info)
        return socket.gethostbyname(m[1] if m else node)

    def _free_port(self, node: str, host: str) -> int:
        """A port free on ``node`` (``free_port`` run there by a short step: below the ephemeral range,
        so the steps' own srun connections cannot take it before the process binds it)."""
        out = _run(["srun", f"--jobid={self.job_id}", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node}",
                    sys.executable, "-c", PORT_PROBE.format(host=host)])
        return int(out.split()[-1])

    # ------------------------------------------------------------------ steps
    def _node_for(self, cpus: int) -> str:
        """Nodes in order, moving on when this one's share of the job is used up (round-robin by task)."""
        if not self.nodes:
            raise ArealError("scheduler slurm: prepare(run_dir) must run before processes start")
        node = self.nodes[self._next_node * len(self.nodes) // max(1, self._tasks()) % len(self.nodes)]
        self._next_node += 1
        return node

    def _tasks(self) -> int:
        return self._alloc.n_servers + (self._alloc.trainer_ranks if self._alloc.trainer_ranks > 1 else 0)

    def _srun(self, name: str, node: str, cpus: int, argv: list[str], env: dict[str, str]) -> SlurmStep:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        cmd = ["srun", f"--jobid={self.job_id}", "--overlap", "--nodes=1", "--ntasks=1", f"--cpus-per-task={cpus}",
               f"--nodelist={node}", "--kill-on-bad-exit=1", f"--job-name={name}", *[str(a) for a in argv]]
        with open(log_path, "ab") as out:
            log_start = out.tell()
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **env}, start_new_session=True)
        step = SlurmStep(name, popen, node, log_path, log_start)
        self.steps.append(step)
        log.info("started slurm step", name=name, node=node, job_id=self.job_id, command=shlex.join(cmd[:9]))
        return step

    def _check(self, steps: list[SlurmStep], allow_exit: bool = False) -> list[int | None]:
        codes = []
        for s in steps:
            code = s.popen.poll()
            if code not in (None, 0) or (code is not None and not allow_exit):
                raise ArealError(f"{s.name} (slurm job {self.job_id}, node {s.node}) exited with status {code}; "
                                 f"end of {s.log_path}:\n{s.log_tail()}")
            codes.append(code)
        return codes


def _run(cmd: list[str]) -> str:
    """stdout of a Slurm command; ArealError with its stderr when it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise ArealError(f"`{shlex.join(cmd)}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _stop_client(step: SlurmStep, timeout_s: float) -> None:
    """SIGTERM a step's srun client (srun passes it on to the step's tasks), SIGKILL after ``timeout_s``."""
    if step.popen.poll() is None:
        step.popen.send_signal(signal.SIGTERM)
    try:
        step.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        step.popen.kill()
        step.popen.wait()


def _step_ids(job_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i"], capture_output=True, text=True).stdout
    return [s for s in out.split() if not s.endswith((".batch", ".extern"))]


def _wait_gone(ids: list[str], timeout_s: float) -> None:
    """Until squeue lists none of ``ids`` (jobs or steps leave COMPLETING), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-s", "-o", "%i"], capture_output=True, text=True).stdout.split()
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if not any(i in out or i in jobs or any(o.startswith(f"{i}.") for o in out) for i in ids):
            return
        time.sleep(0.5)


def _field(info: str, key: str, partition: str) -> int:
    """An integer ``KEY=N`` of ``scontrol show partition -o`` output."""
    found = re.search(rf"\b{key}=(\d+)", info)
    if found is None:
        raise ArealError(f"scheduler slurm: `scontrol show partition {partition}` reports no {key} ({info[:200]!r})")
    return int(found[1])
