"""A real multi-node Ray cluster on one machine, started with the `ray` CLI (tests, benchmarks).

    cluster = RayCluster.start()        # head (resource node_a) + a joined worker (node_b)
    ... scheduler.address = cluster.address ...
    cluster.stop()

The head (`ray start --head`, custom resource ``node_a``) and a worker joined with
`ray start --address` (``node_b``) each run as ``ray start --block`` in their own process group:
teardown signals exactly those groups (never `ray stop`, which would stop every Ray on the
machine). Both listen on the machine's own address, not 127.0.0.1, as nodes of a real cluster do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from areal_core.plugin import free_port

RAY = str(Path(sys.executable).with_name("ray"))
NODE_CPUS = 2


def machine_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def ray_env() -> dict[str, str]:
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1: multi-node on one machine; token auth off on both sides
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayNode:
    """One `ray start --block` process group; ``log`` holds its CLI output."""

    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        _kill_group_leftovers(self.popen.pid)

    def raylet_pid(self) -> int:
        out = subprocess.run(["ps", "-o", "pid=,pgid=,comm=", "-e"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            pid, pgid, comm = line.split(None, 2)
            if int(pgid) == self.popen.pid and comm.strip() == "raylet":
                return int(pid)
        raise RuntimeError(f"no raylet in process group {self.popen.pid}")


def _kill_group_leftovers(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class RayCluster:
    ip: str
    port: int
    root: Path
    temp_dir: str  # short: Ray's socket paths must fit in 107 characters
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def _start(self, name: str, args: list[str], prefix: Sequence[str] = ()) -> RayNode:
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen([*prefix, RAY, "start", "--block", f"--node-ip-address={self.ip}", f"--num-cpus={NODE_CPUS}",
                                      "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}",
                                      f"--dashboard-agent-grpc-port={free_port()}",
                                      f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                                      *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=ray_env(), start_new_session=True)
        node = RayNode(name, popen, log)
        self.nodes.append(node)
        return node

    def start_head(self) -> RayNode:
        return self._start("head", ["--head", f"--port={self.port}", '--resources={"node_a": 4}',
                                    "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
                                    f"--temp-dir={self.temp_dir}"])

    def start_worker(self, name: str = "worker", resource: str = "node_b", hide: Path | None = None) -> RayNode:
        """Join a worker with custom resource ``resource``; ``hide``: a directory this node does not
        see (a private mount namespace with an empty tmpfs over it, as a node without the share)."""
        prefix = [] if hide is None else ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                          f'mount -t tmpfs none "{hide}" && exec "$@"', "sh"]
        node = self._start(name, [f"--address={self.address}", f'--resources={{"{resource}": 4}}'], prefix)
        self.wait_nodes(len([n for n in self.nodes if n.popen.poll() is None]))
        return node

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        """Until the GCS reports ``n`` alive nodes (checked from a short-lived driver process)."""
        script = ("import ray,sys,time\nray.init(address=sys.argv[1], log_to_driver=False)\n"
                  "end=time.time()+float(sys.argv[3])\n"
                  "while sum(n['Alive'] for n in ray.nodes())!=int(sys.argv[2]) and time.time()<end: time.sleep(0.5)\n"
                  "sys.exit(0 if sum(n['Alive'] for n in ray.nodes())==int(sys.argv[2]) else 1)\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nodes[0].popen.poll() is not None:
                raise RuntimeError(f"ray head exited: {self.nodes[0].log.read_text()[-2000:]}")
            res = subprocess.run([sys.executable, "-c", script, self.address, str(n), str(timeout)],
                                 env=ray_env(), capture_output=True, text=True, timeout=timeout + 60)
            if res.returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"Ray cluster at {self.address} never had {n} alive nodes")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()

    @classmethod
    def start(cls, root: Path | None = None) -> RayCluster:
        """A head (``node_a``) and a worker (``node_b``), NODE_CPUS each, on this machine's address."""
        root = Path(root or tempfile.mkdtemp(prefix="areal-ray-"))
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(machine_ip(), free_port(), root, tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        try:
            cluster.start_head()
            cluster.wait_nodes(1)
            cluster.start_worker()
        except BaseException:
            cluster.cleanup()
            raise
        return cluster

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
