"""Staleness control: how many new episodes may start now (DESIGN.md §2).

With B = ``batch_size`` episodes (prompt groups) per training step, η = ``max_head_offpolicyness``,
v = the current weight version and the counters below::

    capacity = min(max_concurrent_rollouts − running,
                   (η + v + 1)·B − (accepted + running))

A new episode starts only while ``capacity > 0``. The second term bounds how far generation may run
ahead of training: by the time version v is trained, at most (η + v + 1)·B groups have been
accepted or are in flight, so a group finished at version u trains at version ≤ u + η: its newest
token lags at most η (η = 0 is synchronous RL, where nothing is generated during training). Tokens
generated before an interruption (a weight update mid-generation) can be older; the controller's
``rollout.enforce_token_lag`` regenerates such groups (:meth:`on_requeue`). Rejected (filtered) and failed episodes do not count:
they free their slot. After recovery at version v the trainer has consumed v·B groups, so
``accepted`` restarts at v·B (:meth:`recover`).

Counters are in episodes (one episode = one group of n samples of one prompt). v is read from the
run's :class:`~areal_core.api.WeightVersion`, which only the trainer sets. Thread-safe: the rollout
loop updates the counters while the trainer thread reads them and moves the version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from areal_core.api.types import WeightVersion
from areal_core.errors import ArealError


@dataclass
class StalenessManager:
    """Admission counters and the capacity formula. All counts are episodes (groups)."""

    batch_size: int
    max_head_offpolicyness: int
    max_concurrent_rollouts: int
    weight_version: WeightVersion = field(default_factory=WeightVersion)  # v: read here, set by the trainer
    running: int = 0  # started, not finished
    accepted: int = 0  # finished and kept (cumulative over the run)
    rejected: int = 0  # finished, dropped by the dynamic filter or by the workflow (cumulative)
    failed: int = 0  # finished with an error (cumulative; retries included)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_concurrent_rollouts"):
            if getattr(self, name) < 1:
                raise ArealError(f"rollout.{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_head_offpolicyness < 0:
            raise ArealError(f"rollout.max_head_offpolicyness must be >= 0 (got {self.max_head_offpolicyness})")

    @classmethod
    def from_config(cls, config, weight_version: WeightVersion | None = None) -> StalenessManager:
        """Build from a :class:`areal_core.config.schema.RolloutConfig`."""
        return cls(batch_size=config.batch_size, max_head_offpolicyness=config.max_head_offpolicyness,
                   max_concurrent_rollouts=config.max_concurrent_rollouts,
                   weight_version=weight_version if weight_version is not None else WeightVersion())

    @property
    def version(self) -> int:
        return self.weight_version.value

    def capacity(self) -> int:
        """Episodes that may start now (may be negative after a version rollback or a recovery)."""
        with self._lock:
            by_concurrency = self.max_concurrent_rollouts - self.running
            by_staleness = (self.max_head_offpolicyness + self.version + 1) * self.batch_size - (self.accepted + self.running)
            return min(by_concurrency, by_staleness)

    def try_start(self) -> bool:
        """Start one episode if capacity allows (check and count atomically)."""
        with self._lock:
            by_concurrency = self.max_concurrent_rollouts - self.running
            by_staleness = (self.max_head_offpolicyness + self.version + 1) * self.batch_size - (self.accepted + self.running)
            if min(by_concurrency, by_staleness) <= 0:
                return False
            self.running += 1
            return True

    def _finish(self, counter: str) -> None:
        with self._lock:
            if self.running <= 0:
                raise ArealError(f"staleness: an episode finished ({counter}) but none was running")
            self.running -= 1
            setattr(self, counter, getattr(self, counter) + 1)

    def on_accept(self) -> None:
        self._finish("accepted")

    def on_reject(self) -> None:
        self._finish("rejected")

    def on_fail(self) -> None:
        self._finish("failed")

    def on_requeue(self) -> None:
        """An accepted group is sent back to be generated again (too stale to train): it no
        longer counts as accepted."""
        with self._lock:
            if self.accepted <= 0:
                raise ArealError("staleness: a group was requeued but none was accepted")
            self.accepted -= 1

    def recover(self, version: int) -> None:
        """Reset after recovery at ``version``: nothing runs, and v·B groups were trained."""
        with self._lock:
            self.running = 0
            self.accepted = int(version) * self.batch_size

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"version": self.version, "running": self.running, "accepted": self.accepted,
                    "rejected": self.rejected, "failed": self.failed}

    def state_dict(self) -> dict[str, int]:
        """What a recovery checkpoint stores (``running`` is not: in-flight work is re-run)."""
        c = self.counters()
        c.pop("running")
        return c

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters; ``accepted`` restarts at version·B (groups buffered but not trained
        at checkpoint time are re-generated, so they must not count)."""
        self.recover(state["version"])
        with self._lock:
            self.rejected = int(state.get("rejected", 0))
            self.failed = int(state.get("failed", 0))
