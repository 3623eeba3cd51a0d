"""Calling reward plugins safely from the rollout event loop.

A reward is ``reward(prompt, completion, sample) -> float`` (DESIGN.md §1), synchronous or
``async``. :class:`RewardRunner` calls it so that it can never stall or crash a run:

* an ``async`` reward is awaited on the loop with ``asyncio.wait_for(timeout_s)`` (cancelled on
  timeout);
* a synchronous reward runs in a daemon thread of its own, so a slow verifier (code execution, a
  regex over a long completion) never blocks generation; after ``timeout_s`` the call is abandoned.
  Python cannot kill a thread: a hung call keeps its thread until it returns (``threads_running``
  counts them), but being a daemon it never keeps the process from exiting, and it never holds
  up other calls (a shared thread pool would: its workers would all end up hung);
* a reward that raises, times out, or returns something that is not a finite number yields a
  :class:`RewardOutcome` with ``error`` set (logged at warning level) instead of an exception.

What the caller does with a failed outcome is its policy (the ``rlvr`` workflow's
``on_reward_error``: score 0.0 and flag the sample, or fail the episode's group).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from dataclasses import dataclass
from typing import Any

from areal_core.api.protocols import Reward
from areal_core.config.schema import RolloutConfig
from areal_core.logging import get_logger

log = get_logger(__name__)

DEFAULT_TIMEOUT_S: float = RolloutConfig.model_fields["reward_timeout_s"].default


@dataclass(frozen=True)
class RewardOutcome:
    """The reward of one completion, or why there is none (``value`` is then 0.0)."""

    value: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class RewardRunner:
    """Wraps one reward: ``await runner(prompt, completion, sample) -> RewardOutcome``, never raises
    (except ``asyncio.CancelledError`` when the episode itself is cancelled)."""

    def __init__(self, reward: Reward, timeout_s: float = DEFAULT_TIMEOUT_S):
        if not callable(reward):
            raise TypeError(f"reward must be callable (got {type(reward).__name__})")
        if timeout_s <= 0:
            raise ValueError(f"reward timeout must be > 0 seconds (got {timeout_s})")
        self.reward = reward
        self.timeout_s = float(timeout_s)
        self.name = getattr(reward, "__name__", type(reward).__name__)
        self._is_async = inspect.iscoroutinefunction(reward) or inspect.iscoroutinefunction(type(reward).__call__)
        self._running_threads = 0
        self._lock = threading.Lock()

    async def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> RewardOutcome:
        try:
            value = await asyncio.wait_for(self._call(prompt, completion, sample), self.timeout_s)
        except asyncio.TimeoutError:
            return self._failure(f"reward {self.name!r} did not return within {self.timeout_s:g}s", sample)
        except Exception as exc:  # noqa: BLE001 - a broken reward fails its sample, not the run
            return self._failure(f"reward {self.name!r} raised {type(exc).__name__}: {exc}", sample)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return self._failure(f"reward {self.name!r} returned {value!r}, not a number", sample)
        if not math.isfinite(value):
            return self._failure(f"reward {self.name!r} returned {value}", sample)
        return RewardOutcome(value)

    async def _call(self, prompt: str, completion: str, sample: dict[str, Any]):
        if self._is_async:
            result = self.reward(prompt, completion, sample)
        else:
            result = await self._in_daemon_thread(prompt, completion, sample)
        if inspect.isawaitable(result):  # an async reward, or a plain function that returned a coroutine
            result = await result
        return result

    def _in_daemon_thread(self, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(ok: bool, value) -> None:
            if not future.done():  # abandoned (timed out / cancelled) futures stay untouched
                (future.set_result if ok else future.set_exception)(value)

        def work() -> None:
            value: Any
            try:
                value, ok = self.reward(*args), True
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                value, ok = exc, False
            finally:
                with self._lock:
                    self._running_threads -= 1
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop closed while this call hung
                pass

        with self._lock:
            self._running_threads += 1
        threading.Thread(target=work, name=f"reward-{self.name}", daemon=True).start()
        return future

    @property
    def threads_running(self) -> int:
        """Synchronous calls still running in their threads (abandoned hung ones included)."""
        with self._lock:
            return self._running_threads

    def _failure(self, message: str, sample: dict[str, Any]) -> RewardOutcome:
        log.warning("reward failed", error=message, sample_id=sample.get("sample_id", sample.get("id")))
        return RewardOutcome(0.0, message)
