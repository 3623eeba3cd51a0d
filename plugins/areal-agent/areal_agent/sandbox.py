"""Runs model-written Python in a separate, limited process.

Each run gets a fresh scratch directory (its working directory, HOME and TMPDIR; removed after)
and a child ``python -I -B sandbox_guard.py SCRATCH`` with the code on stdin. Limits, and how
each is enforced:

==================  ==========================================================================
wall time           the parent kills the child's whole process group after ``wall_time_s``
CPU time            ``RLIMIT_CPU`` = wall_time_s + 1 (the kernel stops a busy loop even if
                    the parent is stalled)
memory              ``RLIMIT_AS`` = ``memory_mb`` (an allocation beyond it raises MemoryError)
file size           ``RLIMIT_FSIZE`` = ``max_file_mb``
network             ``unshare --net`` where it works (root, and a container that allows it:
                    a new network namespace with no usable interface, so connect fails in the
                    kernel); always also the audit hook, which denies creating any socket
writes              the audit hook (PEP 578) of :mod:`areal_agent.sandbox_guard` denies opening
                    for write, creating, removing or renaming any path outside the scratch dir
processes, ctypes   the same hook denies subprocess / os.system / exec / fork / spawn and ctypes
output              stdout / stderr are cut to ``max_output_bytes`` each
==================  ==========================================================================

The audit hook is a Python-level guard (what code running in this interpreter can do); the
kernel-level ones are the rlimits, the process-group kill and the network namespace.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_guard.py")


@dataclass
class SandboxResult:
    ok: bool
    stdout: str
    stderr: str
    error: str | None = None  # "timeout", "memory", "exit N" ... when not ok

    def as_tool_output(self) -> str:
        """What the model sees as the tool's answer."""
        if self.ok:
            return self.stdout if self.stdout.strip() else "(no output)"
        return f"error: {self.error}\n{self.stderr[-800:]}".strip()


@functools.lru_cache(maxsize=1)
def net_namespace_available() -> bool:
    """Whether ``unshare --net`` works here (root, and a kernel / container that allows it)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class PythonSandbox:
    def __init__(self, wall_time_s: float = 5.0, memory_mb: int = 512, max_file_mb: int = 16,
                 max_output_bytes: int = 16384, python: str | None = None, net_namespace: bool | None = None):
        self.wall_time_s = float(wall_time_s)
        self.memory_mb = int(memory_mb)
        self.max_file_mb = int(max_file_mb)
        self.max_output_bytes = int(max_output_bytes)
        self.python = python or sys.executable
        self.net_namespace = net_namespace_available() if net_namespace is None else net_namespace

    def _limits(self) -> None:  # runs in the child between fork and exec
        os.setsid()
        mem = self.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(self.wall_time_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        size = self.max_file_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    async def run(self, code: str) -> SandboxResult:
        scratch = tempfile.mkdtemp(prefix="areal-sandbox-")
        argv = [self.python, "-I", "-B", GUARD, scratch]  # -I: no env vars, user site or script dir on sys.path
        if self.net_namespace:
            argv = ["unshare", "--net", "--"] + argv
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "TMPDIR": scratch,
               "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        proc = await asyncio.create_subprocess_exec(*argv, cwd=scratch, env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    preexec_fn=self._limits)
        try:
            out, err = await asyncio.wait_for(proc.communicate(code.encode()), self.wall_time_s)
            error = None
        except asyncio.TimeoutError:
            out, err, error = b"", b"", f"timeout: killed after {self.wall_time_s:g} s wall time"
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()
            shutil.rmtree(scratch, ignore_errors=True)
        stdout = out[: self.max_output_bytes].decode(errors="replace")
        stderr = err[-self.max_output_bytes:].decode(errors="replace")
        if error is None and proc.returncode != 0:
            if "MemoryError" in stderr:
                error = f"memory: over the {self.memory_mb} MB limit"
            elif proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
                error = "timeout: CPU time limit"
            else:
                last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
                error = f"exit {proc.returncode}: {last}"
        return SandboxResult(ok=error is None, stdout=stdout, stderr=stderr, error=error)
