"""Saying what happened to a process: exited (status), killed (signal), stopped, or running.

    process_state(pid)          "R" running, "S" sleeping, "T" stopped, "Z" zombie... (Linux /proc)
    describe_status(pid, code)  "was killed by SIGKILL", "exited with status 1",
                                "is stopped (SIGSTOP or a debugger): alive but answering nothing", ...
"""

from __future__ import annotations

import signal
from pathlib import Path


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from ``/proc/<pid>/stat`` (None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else None


def describe_status(pid: int, returncode: int | None) -> str:
    """A phrase for a process whose ``Popen.poll()`` gave ``returncode``."""
    if returncode is not None:
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return f"was killed by {name}"
        return f"exited with status {returncode}"
    state = process_state(pid)
    if state in ("T", "t"):
        return "is stopped (SIGSTOP or a debugger): alive but answering nothing"
    if state == "Z":
        return "has exited (zombie, not yet reaped)"
    if state == "D":
        return "is running but blocked in the kernel (uninterruptible I/O)"
    return "is running" + (f" (state {state})" if state else "")
