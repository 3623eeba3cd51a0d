"""The rollout controller: runs workflow episodes concurrently, never waiting for training.

An asyncio event loop in a background thread runs episodes (``workflow.run_episode(engine,
sample)``, one per dataset sample, each returning one *group*: the n samples of that prompt).
Admission is by the staleness formula (:mod:`areal_core.rollout.staleness`): a new episode starts
whenever ``capacity > 0``, taking the next sample from the dataloader given to
:meth:`RolloutController.prepare_batch` (or from :meth:`submit`). The trainer thread only blocks in
:meth:`prepare_batch` until B accepted groups are ready; meanwhile, and while it trains,
generation goes on.

Outcome of an episode::

    returns a group, kept by keep_group    -> accepted (ready for a batch)
    returns None, or keep_group says False -> rejected (dynamic filter; frees its slot)
    raises                                 -> failed; rollout.group_failure = drop: the group is
                                              dropped and counted, = retry: the sample is re-run
                                              (up to rollout.max_retries), then dropped
    InferenceUnavailableError, or too many
    failures in a row                      -> fatal: prepare_batch raises it

Groups are never split or shrunk: a batch is exactly B whole groups.

Staleness is enforced at admission (a group's newest token lags ≤ η when trained); tokens
generated before an interruption can be older. With ``rollout.enforce_token_lag`` a ready group
holding a token older than version − η is not trained but generated again from scratch
(``requeued``; its sample keeps its place at the front of the queue).

Recovery (no sample lost or trained twice): the controller owns the dataloader position (epoch,
items taken in it) and knows every sample taken but not yet trained (pending, running, or ready).
:meth:`state_dict` stores both; after :meth:`load_state_dict` those samples run first, then the
dataloader resumes after the stored position (the dataloader must yield the same order for the
same epoch: a list, or a seeded shuffle with ``set_epoch``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from areal_core.api.protocols import Algorithm, InferenceEngine, SupportsAclose, SupportsStats, WeightUpdater, Workflow
from areal_core.api.types import Trajectory, WeightVersion
from areal_core.errors import ArealError
from areal_core.logging import get_logger
from areal_core.rollout.client import InferenceUnavailableError
from areal_core.rollout.reward_runner import RewardFailureRateError
from areal_core.rollout.sample_ids import sample_id_of
from areal_core.rollout.staleness import StalenessManager
from areal_core.rollout.watchdog import LoopWatchdog

log = get_logger(__name__)

KeepGroup = Callable[[list[Trajectory]], bool]


class ControllableEngine(InferenceEngine, Protocol):
    """An InferenceEngine the controller can pause and push weights through (the :class:`RolloutClient`)."""

    weight_version: WeightVersion
    addrs: list[str]  # the servers in use (a lost one is dropped)

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def connect_updater(self, updater: WeightUpdater) -> None: ...

    async def push_weights(self, updater: WeightUpdater, weights: Any, version: int) -> int: ...

    async def close_updater(self, updater: WeightUpdater) -> None: ...


@dataclass
class _Episode:
    """One dataset sample on its way through the controller."""

    sample: dict[str, Any]
    sample_id: str
    workflow: Workflow | None  # None: restored from a checkpoint, runs with the current workflow
    attempt: int = 0


@dataclass
class _Group:
    episode: _Episode
    trajectories: list[Trajectory]


@dataclass
class _DataPosition:
    """Where the controller is in its dataloader: ``index`` items taken in ``epoch``."""

    epoch: int = 0
    index: int = 0


@dataclass
class _Counters:
    dropped: int = 0  # groups given up after failures
    retried: int = 0  # failed episodes re-queued
    trained: int = 0  # groups returned in batches
    consecutive_failures: int = 0
    reward_errors: int = 0  # trajectories whose reward failed (kept with reward 0)
    requeued: int = 0  # accepted groups generated again (rollout.enforce_token_lag)
    last_batch: dict[str, float] = field(default_factory=dict)


class RolloutController:
    """Concurrent episodes with staleness-controlled admission (see module docstring).

    ``engine``: the inference client workflows generate with (pause/resume/update_weights are
    forwarded to it). ``config``: a :class:`~areal_core.config.schema.RolloutConfig`.
    ``keep_group``: the dynamic filter, an :class:`~areal_core.api.Algorithm` (its ``keep_group``)
    or a callable ``group -> bool``. The weight version is the engine's ``weight_version`` (owned
    by the trainer; ``accepted`` starts at its value·B, as after a recovery). ``max_consecutive_failures``: failed episodes in a row
    (no success between) that stop the run; default ``max(16, 2·B)``.
    """

    def __init__(self, engine: ControllableEngine, config, *, keep_group: Any = None,
                 max_consecutive_failures: int | None = None):
        self.engine = engine
        self.config = config
        self.staleness = StalenessManager.from_config(config, engine.weight_version)
        self.staleness.recover(engine.weight_version.value)
        self._keep = _keep_group_callable(keep_group)
        self.max_consecutive_failures = max_consecutive_failures or max(16, 2 * config.batch_size)
        self._pending: collections.deque[_Episode] = collections.deque()
        self._running: dict[int, _Episode] = {}
        self._ready: collections.deque[_Group] = collections.deque()
        self._tasks: set[asyncio.Task] = set()
        self._seq = 0
        self._dataloader: Any = None
        self._iterator: Iterator[Any] | None = None
        self._workflow: Workflow | None = None
        self._workflows_used: dict[int, Workflow] = {}  # closed at shutdown when they hold resources (an HTTP proxy)
        self._position = _DataPosition()
        self._skip_on_resume = 0  # items of the restored epoch already taken before the checkpoint
        self._admitting = True
        self._fatal: BaseException | None = None
        self._closed = False
        self._n = _Counters()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="areal-rollout", daemon=True)
        self._thread.start()
        self._watchdog = LoopWatchdog(self._loop, getattr(config, "loop_lag_warn_s", 5.0))
        self._watchdog.start()
        self._call(self._init_loop_state())
        self._admitter = asyncio.run_coroutine_threadsafe(self._admit_loop(), self._loop)

    # ================================================================ trainer-thread API
    def prepare_batch(self, dataloader: Iterable, workflow: Workflow, timeout_s: float | None = None) -> list[Trajectory]:
        """Exactly one training batch: B accepted groups (their trajectories, group by group).

        The first call makes ``dataloader`` the source of samples; episodes keep starting from it
        in the background (as capacity allows) between calls. Blocks only until B groups are ready.
        """
        self._call(self._set_source(dataloader, workflow))
        return self.wait(self.config.batch_size, timeout_s)

    def submit(self, sample: dict[str, Any], workflow: Workflow) -> None:
        """Queue one sample's episode (it starts when capacity allows)."""
        self._call(self._submit(sample, workflow))

    def wait(self, count: int, timeout_s: float | None = None) -> list[Trajectory]:
        """Block until ``count`` accepted groups are ready; return their trajectories."""
        start = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self._take(count), self._loop)
        try:
            groups = future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ArealError(f"rollout: {count} accepted groups not ready after {timeout_s:g}s "
                             f"({self._describe_counters()})") from None
        self._n.last_batch["rollout/wait_s"] = time.monotonic() - start
        return [t for g in groups for t in g.trajectories]

    def pause(self) -> None:
        """Stop admitting episodes and pause the servers (running episodes hold mid-generation)."""
        self._call(self._pause())

    def resume(self) -> None:
        """Resume the servers and admission."""
        self._call(self._resume())

    def connect_updater(self, updater: WeightUpdater) -> None:
        """Let the backend's weight updater prepare its path to every server (once per run)."""
        self._call(self.engine.connect_updater(updater))

    def push_weights(self, updater: WeightUpdater, weights: Any, version: int) -> int:
        """Between :meth:`pause` and :meth:`resume`: every server serves ``weights`` as ``version``
        (see :class:`~areal_core.api.WeightUpdater` for what ``weights`` is per path). Returns the
        bytes sent. The trainer then sets the run's weight version."""
        return self._call(self.engine.push_weights(updater, weights, version))

    def close_updater(self, updater: WeightUpdater) -> None:
        self._call(self.engine.close_updater(updater))

    def get_version(self) -> int:
        return self.staleness.version

    def metrics(self) -> dict[str, float]:
        """Counters now, the last batch's version lag and wait time, and the client's timings."""
        out = {f"rollout/{k}": float(v) for k, v in self.staleness.counters().items()}
        out.update(self._call(self._queue_sizes()))
        out.update({f"rollout/{k}": float(getattr(self._n, k))
                    for k in ("dropped", "retried", "trained", "reward_errors", "requeued")})
        out.update(self._n.last_batch)
        if isinstance(self.engine, SupportsStats):
            out.update({f"inference/{k}": float(v) for k, v in self.engine.stats().items()})
        return out

    def in_flight_sample_ids(self) -> list[str]:
        """Samples taken from the dataloader (or submitted) but not yet trained or dropped."""
        return [e.sample_id for e in self._call(self._in_flight())]

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a recovery checkpoint (samples must be JSON/pickle-able dataset rows)."""
        return self._call(self._state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore before the first :meth:`prepare_batch`: in-flight samples run first, then the
        dataloader continues after the stored position; ``accepted`` restarts at version·B."""
        self._call(self._load_state_dict(state))

    def close(self) -> None:
        """Cancel running episodes, close the engine's connections, stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.stop()
        blocked = self._watchdog.blocked_s > 0  # a blocked loop cannot shut down: do not wait for it
        try:
            if blocked:
                log.error("rollout loop is blocked and cannot shut down; abandoning its thread")
            else:
                self._call(self._shutdown(), timeout_s=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=1 if blocked else 30)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> RolloutController:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, coro, timeout_s: float | None = None):
        if threading.current_thread() is self._thread:
            coro.close()
            raise ArealError("RolloutController methods are for the trainer thread, not for workflows")
        if self._loop.is_closed():
            coro.close()
            raise ArealError("RolloutController is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # ================================================================ loop-thread internals
    async def _init_loop_state(self) -> None:
        self._wake = asyncio.Event()
        self._ready_changed = asyncio.Event()
        # a new version raises the staleness capacity: admit what it allows
        self.engine.weight_version.subscribe(self._on_new_version)

    def _on_new_version(self, _version: int) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _admit_loop(self) -> None:
        """Start episodes while capacity > 0; sleep until something changes (finish, version,
        resume, new samples)."""
        while True:
            self._wake.clear()
            try:
                while self._admitting and self._fatal is None and self.staleness.capacity() > 0:
                    episode = self._next_episode()
                    if episode is None:
                        break
                    if not self.staleness.try_start():
                        self._pending.appendleft(episode)
                        break
                    self._start(episode)
            except Exception as exc:  # noqa: BLE001 - e.g. the dataloader raised: stop and tell the trainer
                self._set_fatal(ArealError(f"rollout: admitting episodes failed: {type(exc).__name__}: {exc}"))
            await self._wake.wait()

    def _next_episode(self) -> _Episode | None:
        if not self._pending:
            self._pull_from_dataloader()
        while self._pending:
            episode = self._pending.popleft()
            if episode.workflow is None:
                if self._workflow is None:  # restored sample: wait for prepare_batch's workflow
                    self._pending.appendleft(episode)
                    return None
                episode.workflow = self._workflow
            return episode
        return None

    def _pull_from_dataloader(self) -> None:
        """Take one dataloader item (a sample dict, or a list of them) into the pending queue."""
        if self._iterator is None:
            return
        try:
            item = next(self._iterator)
        except StopIteration:
            self._position = _DataPosition(self._position.epoch + 1, 0)
            self._iterator = self._epoch_iterator()
            try:
                item = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self._set_fatal(ArealError(
                    f"rollout: the dataloader yielded no samples in epoch {self._position.epoch} (a generator "
                    f"cannot be iterated twice: pass a list or a re-iterable dataloader)"))
                return
        self._position.index += 1
        samples = item if isinstance(item, (list, tuple)) else [item]
        for sample in samples:
            if not isinstance(sample, dict):
                self._set_fatal(ArealError(
                    f"rollout: dataloader items must be sample dicts or lists of them (got {type(sample).__name__}; "
                    f"with a torch DataLoader use collate_fn=lambda rows: rows)"))
                return
            self._pending.append(_Episode(sample, sample_id_of(sample), self._workflow))

    def _epoch_iterator(self) -> Iterator[Any]:
        set_epoch = getattr(self._dataloader, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self._position.epoch)
        return iter(self._dataloader)

    def _start(self, episode: _Episode) -> None:
        self._seq += 1
        seq = self._seq
        self._running[seq] = episode
        task = self._loop.create_task(self._run(seq, episode))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, seq: int, episode: _Episode) -> None:
        assert episode.workflow is not None  # _next_episode gives every episode a workflow
        try:
            group = await episode.workflow.run_episode(self.engine, episode.sample)
            kept = group is not None and self._stamp(group, episode, seq) and (self._keep is None or bool(self._keep(group)))
        except asyncio.CancelledError:
            raise
        except (InferenceUnavailableError, RewardFailureRateError) as exc:
            self.staleness.on_fail()
            self._pending.appendleft(episode)  # not the sample's fault: keep it for recovery
            self._set_fatal(exc)
        except Exception as exc:  # noqa: BLE001 - an episode's failure is handled per group_failure
            self.staleness.on_fail()
            self._on_failure(episode, exc)
        else:
            if kept and group is not None:  # (kept implies a group)
                self.staleness.on_accept()
                self._ready.append(_Group(episode, group))
                self._n.reward_errors += sum("reward_error" in t.info for t in group)
            else:
                self.staleness.on_reject()
            self._n.consecutive_failures = 0
        finally:
            self._running.pop(seq, None)
            self._wake.set()
            self._ready_changed.set()

    def _stamp(self, group: list[Trajectory], episode: _Episode, seq: int) -> bool:
        """Give every trajectory of the group the sample id and one group id."""
        if not isinstance(group, list) or not group or not all(isinstance(t, Trajectory) for t in group):
            raise ArealError(f"workflow {type(episode.workflow).__name__} returned {type(group).__name__} "
                             f"for sample {episode.sample_id!r}; expected a non-empty list of Trajectory or None")
        group_id = group[0].group_id or f"{episode.sample_id}#{seq}"
        for t in group:
            t.sample_id = t.sample_id or episode.sample_id
            t.group_id = group_id
        return True

    def _on_failure(self, episode: _Episode, exc: Exception) -> None:
        self._n.consecutive_failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if self.config.group_failure == "retry" and episode.attempt < self.config.max_retries:
            episode.attempt += 1
            self._n.retried += 1
            self._pending.appendleft(episode)
            log.warning("episode failed, retrying its group", sample_id=episode.sample_id,
                        attempt=episode.attempt, error=error)
        else:
            self._n.dropped += 1
            log.warning("episode failed, group dropped", sample_id=episode.sample_id, attempts=episode.attempt + 1,
                        error=error)
        if self._n.consecutive_failures >= self.max_consecutive_failures:
            self._set_fatal(ArealError(f"rollout: {self._n.consecutive_failures} episodes failed in a row; "
                                       f"last one (sample {episode.sample_id!r}): {error}"))

    def _set_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("rollout stopped", error=str(exc))
        self._ready_changed.set()

    async def _take(self, count: int) -> list[_Group]:
        while True:
            if getattr(self.config, "enforce_token_lag", False):
                self._requeue_stale()
            if len(self._ready) >= count:
                break
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise ArealError("RolloutController was closed while waiting for a batch")
            self._ready_changed.clear()
            await self._ready_changed.wait()
        groups = [self._ready.popleft() for _ in range(count)]
        self._n.trained += count
        self._n.last_batch = version_lag_stats([t for g in groups for t in g.trajectories], self.staleness.version)
        if self._n.last_batch["rollout/version_lag_min"] < 0:
            log.warning("trained tokens are newer than the trainer's weight version: the servers' versions and "
                        "set_version() disagree", version=self.staleness.version,
                        min_lag=self._n.last_batch["rollout/version_lag_min"])
        return groups

    def _requeue_stale(self) -> None:
        """``rollout.enforce_token_lag``: send ready groups with a token older than version − η back
        to be generated from scratch (front of the queue, same sample; not a failure)."""
        oldest_allowed = self.staleness.version - self.config.max_head_offpolicyness
        keep: collections.deque[_Group] = collections.deque()
        for group in self._ready:
            versions = [v for t in group.trajectories for m, v in zip(t.loss_mask, t.versions) if m and v >= 0]
            if versions and min(versions) < oldest_allowed:
                self.staleness.on_requeue()
                self._n.requeued += 1
                self._pending.appendleft(group.episode)
            else:
                keep.append(group)
        if len(keep) != len(self._ready):
            self._ready = keep
            self._wake.set()

    async def _set_source(self, dataloader: Iterable, workflow: Workflow) -> None:
        self._workflow = workflow
        self._workflows_used[id(workflow)] = workflow
        if dataloader is not self._dataloader:
            self._dataloader = dataloader
            self._iterator = self._epoch_iterator()
            for _ in range(self._skip_on_resume):
                if next(self._iterator, None) is None:
                    break
            self._skip_on_resume = 0
        self._wake.set()

    async def _submit(self, sample: dict[str, Any], workflow: Workflow) -> None:
        self._pending.append(_Episode(sample, sample_id_of(sample), workflow))
        self._workflows_used[id(workflow)] = workflow
        self._wake.set()

    async def _pause(self) -> None:
        self._admitting = False
        await self.engine.pause()

    async def _resume(self) -> None:
        await self.engine.resume()
        self._admitting = True
        self._wake.set()

    async def _queue_sizes(self) -> dict[str, float]:
        return {"rollout/pending": float(len(self._pending)), "rollout/ready": float(len(self._ready))}

    async def _in_flight(self) -> list[_Episode]:
        return [g.episode for g in self._ready] + list(self._running.values()) + list(self._pending)

    async def _state_dict(self) -> dict[str, Any]:
        return {
            "staleness": self.staleness.state_dict(),
            "data_position": {"epoch": self._position.epoch, "index": self._position.index},
            "in_flight": [{"sample_id": e.sample_id, "sample": e.sample} for e in await self._in_flight()],
            "counters": {"dropped": self._n.dropped, "retried": self._n.retried, "trained": self._n.trained},
        }

    async def _load_state_dict(self, state: dict[str, Any]) -> None:
        if self._running or self._ready or self._seq:
            raise ArealError("RolloutController.load_state_dict must come before any episode has started")
        self.staleness.load_state_dict(state["staleness"])
        pos = state["data_position"]
        self._position = _DataPosition(int(pos["epoch"]), int(pos["index"]))
        self._skip_on_resume = self._position.index
        self._dataloader, self._iterator = None, None
        self._pending = collections.deque(_Episode(e["sample"], e["sample_id"], None) for e in state["in_flight"])
        for key, value in state.get("counters", {}).items():
            setattr(self._n, key, int(value))
        self._wake.set()

    async def _shutdown(self) -> None:
        self._admitter.cancel()
        # cancel until every episode has ended: on Python < 3.12 ``asyncio.wait_for`` can swallow a
        # cancellation that arrives as its inner call completes, and the episode then waits on
        # (e.g. for a resume that never comes); the next cancel reaches it there
        while self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=1.0)
        self._ready_changed.set()
        for workflow in self._workflows_used.values():  # on this loop: what they serve runs on it
            if isinstance(workflow, SupportsAclose):
                await workflow.aclose()
        if isinstance(self.engine, SupportsAclose):
            await self.engine.aclose()

    def _describe_counters(self) -> str:
        c = self.staleness.counters()
        return (f"version {c['version']}, running {c['running']}, accepted {c['accepted']}, rejected {c['rejected']}, "
                f"failed {c['failed']}, ready {len(self._ready)}, pending {len(self._pending)}, "
                f"capacity {self.staleness.capacity()}, admitting {self._admitting}")


def _keep_group_callable(keep_group: Any) -> KeepGroup | None:
    """The dynamic filter of an Algorithm, or a plain ``group -> bool`` callable, or None."""
    if keep_group is None:
        return None
    if isinstance(keep_group, Algorithm):
        return keep_group.keep_group
    if callable(keep_group):
        return keep_group
    raise ArealError(f"keep_group must be an Algorithm or a callable (got {type(keep_group).__name__})")


def version_lag_stats(trajectories: list[Trajectory], version: int, max_bucket: int = 8) -> dict[str, float]:
    """Version lag of the trained tokens: ``version − token version`` over loss tokens.

    Returns ``rollout/version_lag_mean``, ``_max``, ``_min`` (< 0 means the servers report a newer
    version than the trainer's: a setup error) and a histogram
    ``rollout/version_lag_hist/<k>`` (fraction of trained tokens with lag k; the last bucket is
    ``>=max_bucket``). Tokens with version < 0 (not generated) are skipped.
    """
    counts: collections.Counter[int] = collections.Counter()
    for t in trajectories:
        for m, v in zip(t.loss_mask, t.versions):
            if m and v >= 0:
                counts[version - v] += 1
    total = sum(counts.values())
    if total == 0:
        return {"rollout/version_lag_mean": 0.0, "rollout/version_lag_max": 0.0, "rollout/version_lag_min": 0.0,
                "rollout/trained_tokens": 0.0}
    out = {
        "rollout/version_lag_mean": sum(k * n for k, n in counts.items()) / total,
        "rollout/version_lag_max": float(max(counts)),
        "rollout/version_lag_min": float(min(counts)),
        "rollout/trained_tokens": float(total),
    }
    for lag, n in sorted(counts.items()):
        key = f"rollout/version_lag_hist/{'>=' if lag >= max_bucket else ''}{min(lag, max_bucket)}"
        out[key] = out.get(key, 0.0) + n / total
    return out
