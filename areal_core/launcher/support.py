"""What every scheduler needs: waiting for freshly started inference servers, and log tails.

    await wait_healthy(backend, {"10.0.0.2:30001": check_server0, ...}, timeout_s=300,
                       setting="scheduler.server_start_timeout_s", log_tail=tail_of)

Each ``check`` raises ArealError when its process has died (so a crashed server fails the start
at once, not after the timeout); ``log_tail(addr)`` gives the end of a server's log for the
timeout message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from areal_core.api.protocols import InferenceBackend
from areal_core.auth import auth_headers
from areal_core.config.allocation import Allocation, parse_allocation
from areal_core.errors import ArealError

LOG_TAIL_CHARS = 3000


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a process log (for error messages)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")[-chars:]
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
