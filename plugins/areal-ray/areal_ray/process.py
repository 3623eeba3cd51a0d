"""One OS process of a run, owned by a Ray actor on the node the placement group chose.

The actor picks the node's address and a free port there, starts the command with its output
appended to a log file under the run directory (shared storage, so the driver and every node
see the same file as it grows), and reports the exit status. The process dies with the actor:
it is started with ``PR_SET_PDEATHSIG`` (Linux), so a killed actor or a lost node leaves no
orphan. Trainer rank 0's actor also serves the group's rendezvous store (``serve_rendezvous_store``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from areal_core.plugin import describe_status, die_with_parent, free_port, host_rendezvous_store


class ProcessActor:
    """Body of the Ray actor (wrapped with ``ray.remote`` by the scheduler)."""

    def __init__(self) -> None:
        self.popen: subprocess.Popen | None = None
        self.store: Any = None  # a trainer group's rendezvous store, when this actor serves it

    def serve_rendezvous_store(self) -> dict[str, str]:
        """Serve a trainer group's rendezvous store from this actor, on its node, for as long as the
        actor lives; returns the ranks' ``MASTER_ADDR``/``MASTER_PORT`` environment (the port is bound now)."""
        import ray

        self.store, env = host_rendezvous_store(ray.util.get_node_ip_address())
        return env

    def where(self) -> tuple[str, str, int]:
        """(node id, node address, a port free on that address a moment ago)."""
        import ray

        ip = ray.util.get_node_ip_address()
        return ray.get_runtime_context().get_node_id(), ip, free_port(ip)

    def start(self, argv: list[str], env: dict[str, str], log_path: str) -> int:
        """Start ``argv`` with this node's environment plus ``env``, its output appended to
        ``log_path``; returns where in the log its output begins (a restart appends to the file)."""
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "ab") as out:
            log_start = out.tell()
            self.popen = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                          start_new_session=True, preexec_fn=die_with_parent)
        return log_start

    def describe(self) -> tuple[int | None, str, bool]:
        """(pid, what became of it: "is running", "was killed by SIGKILL"..., whether it is running)."""
        if self.popen is None:
            return None, "was never started", False
        code = self.popen.poll()
        return self.popen.pid, describe_status(self.popen.pid, code), code is None

    def poll(self) -> int | None:
        """Exit status, or None while running."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; returns the exit status."""
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.wait()
