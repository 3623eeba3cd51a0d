"""A loop-lag watchdog: notices when an asyncio event loop stops running callbacks, and says why.

Everything of the rollout (episodes, rewards, HTTP calls) shares one event loop. Code that blocks
it (``time.sleep`` or a long computation inside ``async def``, a synchronous HTTP call) freezes
all of them, and no timeout on the loop can fire. The watchdog is a thread that posts a
heartbeat callback every ``interval_s``; when a heartbeat has waited longer than ``warn_s``, it
logs an error with the stack the loop thread is executing (which names the blocking function),
and logs again when the loop runs again, with how long it was blocked::

    dog = LoopWatchdog(loop, warn_s=5.0)
    dog.start()      # from any thread, once the loop runs (or will run) in its own thread
    ...
    dog.stop()

``stalls`` counts blockages; ``blocked_s`` is how long the loop has been blocked now (0 when
it is not), which lets a caller skip waiting for a loop that cannot answer.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback

from areal_core.logging import get_logger

log = get_logger(__name__)


class LoopWatchdog:
    """Reports an event loop blocked for more than ``warn_s`` (see module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, warn_s: float = 5.0, interval_s: float | None = None):
        if warn_s <= 0:
            raise ValueError(f"loop watchdog warn_s must be > 0 (got {warn_s})")
        self.loop, self.warn_s = loop, float(warn_s)
        self.interval_s = interval_s if interval_s is not None else min(1.0, warn_s / 4)
        self.stalls = 0
        self._posted: float | None = None  # monotonic time of the heartbeat not yet run
        self._loop_thread: int | None = None
        self._reported = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="areal-loop-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2 * self.interval_s + 1)

    @property
    def blocked_s(self) -> float:
        posted = self._posted
        lag = time.monotonic() - posted if posted is not None else 0.0
        return lag if lag > self.warn_s else 0.0

    def _beat(self) -> None:
        self._loop_thread = threading.get_ident()
        if self._reported:
            log.warning("event loop running again", blocked_s=round(time.monotonic() - (self._posted or 0.0), 2))
            self._reported = False
        self._posted = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.loop.is_closed():
                return
            if self._posted is None:
                self._posted = time.monotonic()
                try:
                    self.loop.call_soon_threadsafe(self._beat)
                except RuntimeError:  # the loop closed meanwhile
                    return
            elif not self._reported and time.monotonic() - self._posted > self.warn_s:
                self._reported = True
                self.stalls += 1
                log.error("event loop blocked: no callback has run for "
                          f"{time.monotonic() - self._posted:.1f}s (rollout.loop_lag_warn_s={self.warn_s:g}); "
                          "something on the loop is not awaiting (e.g. time.sleep or a heavy computation in an "
                          "async reward: make it synchronous, areal runs those in threads)",
                          stack=self._loop_stack())

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread) if self._loop_thread is not None else None
        if frame is None:
            return "(the loop thread's stack is unknown)"
        return "".join(traceback.format_stack(frame)[-8:])
