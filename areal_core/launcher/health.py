"""Waiting for freshly started inference servers, shared by every scheduler.

    await wait_healthy(backend, {"10.0.0.2:30001": check_server0, ...}, timeout_s=300,
                       setting="scheduler.server_start_timeout_s", log_tail=tail_of)

Each ``check`` raises ArealError when its process has died (so a crashed server fails the start
at once, not after the timeout); ``log_tail(addr)`` gives the end of a server's log for the
timeout message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from areal_core.api.protocols import InferenceBackend
from areal_core.errors import ArealError


async def wait_healthy(backend: InferenceBackend, checks: dict[str, Callable[[], None]], *, timeout_s: float,
                       setting: str, log_tail: Callable[[str], str], poll_s: float = 0.25) -> None:
    """Poll ``backend.health`` for every address until all answer healthy."""
    import httpx

    deadline = time.monotonic() + timeout_s
    pending = dict(checks)
    async with httpx.AsyncClient(timeout=5.0) as client:
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
