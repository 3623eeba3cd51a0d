"""Calling reward plugins safely from the rollout event loop, and failing loudly when they break.

A reward is ``reward(prompt, completion, sample) -> float`` (DESIGN.md §1), synchronous or
``async``. :class:`RewardRunner` calls it so that one bad call can never stall or crash a run,
while a reward that is broken for good stops the run with a clear error:

* an ``async`` reward is awaited on the loop with ``asyncio.wait_for(timeout_s)`` (cancelled on
  timeout). One that blocks the loop (``time.sleep`` inside ``async def``) cannot be interrupted
  by Python; :class:`areal_core.rollout.watchdog.LoopWatchdog` reports it with its stack;
* a synchronous reward runs in a daemon thread, at most ``max_threads`` at once. After
  ``timeout_s`` the call is abandoned, but Python cannot kill a thread: a hung call keeps its
  slot until it returns. So hung calls never accumulate threads beyond ``max_threads``; once
  every slot is held by a hung call, further calls time out waiting for a slot, and the failure
  share below stops the run. (Untrusted code belongs in a reward that runs it in a subprocess it
  can kill, e.g. the sandboxes of ``areal-math``.)
* the value must be a finite real number with ``|value| <= max_abs``. Coerced: ``bool`` (to 1.0 /
  0.0), ``int``, numpy scalars and one-element tensors (via ``float()``). Refused: strings (even
  ``"1.0"``), ``None``, NaN, ±inf, containers. A refused value, an exception or a timeout yields a
  :class:`RewardOutcome` with ``error`` set (logged at warning level) instead of an exception;
* failures are counted over the last ``failure_window`` calls: when more than
  ``max_failure_share`` of them failed, every later call raises :class:`RewardFailureRateError`
  (the rollout controller treats it as fatal), naming the share and the last error.
  ``max_failure_share = 1`` turns this off.

What the caller does with one failed outcome is its policy (the ``rlvr`` workflow's
``on_reward_error``: score 0.0 and flag the sample, or fail the episode's group).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any

from areal_core.api.protocols import Reward
from areal_core.config.schema import RolloutConfig
from areal_core.errors import ArealError
from areal_core.logging import get_logger

log = get_logger(__name__)

_DEFAULTS = RolloutConfig.model_fields
DEFAULT_TIMEOUT_S: float = _DEFAULTS["reward_timeout_s"].default
SLOT_POLL_S = 0.05


class RewardFailureRateError(ArealError):
    """Rewards failed for more than the allowed share of recent samples: the run must stop."""


@dataclass(frozen=True)
class RewardOutcome:
    """The reward of one completion, or why there is none (``value`` is then 0.0)."""

    value: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FailureShare:
    """The share of failures among the last ``window`` outcomes; trips above ``max_share``."""

    def __init__(self, window: int, max_share: float):
        if window < 1 or not 0 <= max_share <= 1:
            raise ValueError(f"reward failure window must be >= 1 and share in [0, 1] (got {window}, {max_share})")
        self.window, self.max_share = window, max_share
        self._recent: collections.deque[bool] = collections.deque(maxlen=window)
        self.tripped: str | None = None

    def record(self, failed: bool, error: str | None) -> None:
        self._recent.append(failed)
        if self.tripped is None and self.max_share < 1 and len(self._recent) == self.window:
            share = sum(self._recent) / self.window
            if share > self.max_share:
                self.tripped = (f"rewards failed for {share:.0%} of the last {self.window} samples (limit "
                                f"rollout.reward_max_failure_share={self.max_share:g}); last error: {error}")


class RewardRunner:
    """Wraps one reward: ``await runner(prompt, completion, sample) -> RewardOutcome``. Raises only
    :class:`RewardFailureRateError` (once failures pass the allowed share) and
    ``asyncio.CancelledError`` (when the episode itself is cancelled)."""

    def __init__(self, reward: Reward, timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 max_threads: int = _DEFAULTS["reward_max_threads"].default,
                 failure_window: int = _DEFAULTS["reward_failure_window"].default,
                 max_failure_share: float = _DEFAULTS["reward_max_failure_share"].default,
                 max_abs: float = _DEFAULTS["reward_max_abs"].default):
        if not callable(reward):
            raise TypeError(f"reward must be callable (got {type(reward).__name__})")
        if timeout_s <= 0:
            raise ValueError(f"reward timeout must be > 0 seconds (got {timeout_s})")
        if max_threads < 1:
            raise ValueError(f"reward max_threads must be >= 1 (got {max_threads})")
        self.reward = reward
        self.timeout_s = float(timeout_s)
        self.max_threads = max_threads
        self.max_abs = float(max_abs)
        self.failures = FailureShare(failure_window, max_failure_share)
        self.name = getattr(reward, "__name__", type(reward).__name__)
        self._is_async = inspect.iscoroutinefunction(reward) or inspect.iscoroutinefunction(type(reward).__call__)
        self._running_threads = 0
        self._lock = threading.Lock()
        self._coerced: set[str] = set()

    @classmethod
    def from_config(cls, reward: Reward, rollout: RolloutConfig) -> RewardRunner:
        """Build with the ``rollout.reward_*`` settings of a run config."""
        return cls(reward, rollout.reward_timeout_s, max_threads=rollout.reward_max_threads,
                   failure_window=rollout.reward_failure_window, max_failure_share=rollout.reward_max_failure_share,
                   max_abs=rollout.reward_max_abs)

    async def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> RewardOutcome:
        if self.failures.tripped:
            raise RewardFailureRateError(f"reward {self.name!r}: {self.failures.tripped}")
        outcome = await self._outcome(prompt, completion, sample)
        self.failures.record(not outcome.ok, outcome.error)
        if self.failures.tripped:
            log.error("rewards failing", reward=self.name, error=self.failures.tripped)
            raise RewardFailureRateError(f"reward {self.name!r}: {self.failures.tripped}")
        return outcome

    async def _outcome(self, prompt: str, completion: str, sample: dict[str, Any]) -> RewardOutcome:
        try:
            value = await asyncio.wait_for(self._call(prompt, completion, sample), self.timeout_s)
        except asyncio.TimeoutError:
            busy = self.threads_running >= self.max_threads and not self._is_async
            why = f" (all {self.max_threads} reward threads busy with earlier calls)" if busy else ""
            return self._failure(f"reward {self.name!r} did not return within {self.timeout_s:g}s{why}", sample)
        except Exception as exc:  # noqa: BLE001 - a broken reward fails its sample, not the run
            return self._failure(f"reward {self.name!r} raised {type(exc).__name__}: {exc}", sample)
        number, problem = self._as_number(value)
        if problem:
            return self._failure(f"reward {self.name!r} returned {problem}", sample)
        return RewardOutcome(number)

    def _as_number(self, value: Any) -> tuple[float, str | None]:
        """(the value as a float, None) or (0.0, why it is refused); see the module docstring."""
        if isinstance(value, (str, bytes)) or value is None or not _real_like(value):
            return 0.0, f"{value!r:.80}, not a number"
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):  # e.g. a tensor of several elements
            return 0.0, f"{value!r:.80}, not a single number"
        if not isinstance(value, float) and type(value).__name__ not in self._coerced:
            self._coerced.add(type(value).__name__)
            log.info("reward value coerced to float", reward=self.name, type=type(value).__name__,
                     example=repr(value)[:40], to=number)
        if not math.isfinite(number):
            return 0.0, f"{number}, not a finite number"
        if abs(number) > self.max_abs:
            return 0.0, f"{number:g}, beyond rollout.reward_max_abs={self.max_abs:g}"
        return number, None

    async def _call(self, prompt: str, completion: str, sample: dict[str, Any]):
        if self._is_async:
            result = self.reward(prompt, completion, sample)
        else:
            result = await self._in_daemon_thread(prompt, completion, sample)
        if inspect.isawaitable(result):  # an async reward, or a plain function that returned a coroutine
            result = await result
        return result

    async def _in_daemon_thread(self, *args) -> Any:
        loop = asyncio.get_running_loop()
        while not self._take_slot():  # cancelled by wait_for when no slot frees in time
            await asyncio.sleep(SLOT_POLL_S)
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

        threading.Thread(target=work, name=f"reward-{self.name}", daemon=True).start()
        return await future

    def _take_slot(self) -> bool:
        with self._lock:
            if self._running_threads >= self.max_threads:
                return False
            self._running_threads += 1
            return True

    @property
    def threads_running(self) -> int:
        """Synchronous calls still running in their threads (abandoned hung ones included)."""
        with self._lock:
            return self._running_threads

    def _failure(self, message: str, sample: dict[str, Any]) -> RewardOutcome:
        log.warning("reward failed", error=message, sample_id=sample.get("sample_id", sample.get("id")))
        return RewardOutcome(0.0, message)


def _real_like(value: Any) -> bool:
    """A real number, a numpy scalar, or a tensor/array (checked for one element by ``float``)."""
    return isinstance(value, numbers.Real) or hasattr(value, "item") and not isinstance(value, complex)
