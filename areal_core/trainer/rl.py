"""The asynchronous RL loop (DESIGN.md §2): one :class:`RLTrainer` per trainer rank.

Per step s = 0, 1, ... (weights are at version s when it starts)::

    batch  = rollout.prepare_batch(dataloader, workflow)        rank 0; waits for B accepted groups
    batch  -> every rank                                         (broadcast over the trainer group)
    stats  = algorithm.train_step(SequenceBatch(batch), actor, critic, ref)
    push weights as version s + 1 through the backend's WeightUpdater (weight_sync.type):
        disk:        actor.export_hf(RUN_DIR/weights/v{s+1}); pause; updater.push(that dir); resume
        distributed: pause; updater.push(actor.named_full_weights()); resume
        adapter:     actor.export_adapter(RUN_DIR/weights/v{s+1}); pause; updater.push(that dir); resume
    weight_version.set(s + 1)                                     (before resume: new tokens carry it)
    [eval every trainer.eval_every steps and at the end]  [checkpoint every checkpoint_every]
    log metrics, audit, a sample of rollouts (rank 0)

Generation never stops for training: the rollout controller keeps episodes running in its own
thread as the staleness bound allows (η = rollout.max_head_offpolicyness; η = 0 is synchronous RL,
where batch s+1 starts generating only once version s+1 is on the servers).

**Versions.** The trainer is the one owner of the weight version (a
:class:`~areal_core.api.WeightVersion` in the engines' :class:`~areal_core.api.RunContext`, shared
with the rollout client and the staleness manager, which only read it). An algorithm may take
several optimizer steps per trainer step (``n_minibatches`` × ``ppo_epochs``); the version counts
trainer steps: during step s it is s (the weights the servers run, so the log-linear proximal
approximation reads ``actor.run.weight_version.value`` as the version of π_prox), and it becomes
s + 1 once the servers serve the new weights.

**Temperatures.** The logprobs the servers return are under the sampling temperature τ of the
workflow (1 for greedy sampling). The engine's ``temperature`` (train_batch) and the algorithm's
(recomputed π_prox) must be τ: :func:`reconcile_temperatures` sets them when left unset and fails
with an error naming the fields when set to something else.

**Recovery.** See :mod:`areal_core.trainer.checkpoint`. A recovered run restores the engines,
the controller (data position + samples in flight, which run again first; accepted restarts at
v·B), the step and counters, then pushes the restored weights to the fresh servers as version v.
Rows of ``metrics.jsonl`` and ``trained_samples.jsonl`` after the checkpoint's step are dropped
(all of them when ``recover=auto`` finds no checkpoint): those steps run again.

Audit trail: ``RUN_DIR/trained_samples.jsonl`` gets one line per step with the sample and group
ids trained and the min/max version of the trained tokens (tests check "no sample trained twice"
and "lag ≤ η" from it). ``RUN_DIR/rollouts.jsonl`` gets ``trainer.log_rollouts_per_step`` sampled
trajectories per step (prompt, completion, reward, versions), to check a verifier on real outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from areal_core.api.protocols import (
    SupportsAdapterExport,
    SupportsOptimizerStepCount,
    SupportsWeightsChecksum,
    TrainEngine,
    WeightUpdater,
)
from areal_core.api.types import RunContext, Trajectory, WeightUpdateMeta, WeightVersion
from areal_core.auth import auth_headers
from areal_core.config.allocation import layout_of, require_parallel_support
from areal_core.config.base import WorkflowConfigBase
from areal_core.config.loader import ResolvedConfig
from areal_core.config.schema import RunConfig
from areal_core.errors import ArealError
from areal_core.logging import get_logger
from areal_core.metrics import METRICS_FILE, MetricsLogger
from areal_core.trainer import checkpoint as ckpt

if TYPE_CHECKING:
    from rich.progress import Progress

    from areal_core.rollout.controller import RolloutController

log = get_logger(__name__)

AUDIT_FILE = "trained_samples.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
WEIGHTS_DIR = "weights"
EXPORT_DIR = "export"
HOST_ADDR_ENV = "AREAL_HOST_ADDR"  # set by the scheduler: where servers reach this trainer's node


@dataclass
class StepTimer:
    """Wall time of the named phases of one step: ``with timer.phase("train_s"): ...``."""

    times: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def reconcile_temperatures(cfg: ResolvedConfig[RunConfig]) -> float:
    """Make the actor's and the algorithm's ``temperature`` equal the workflow's sampling one.

    Returns τ. A field left at its default is set to τ; one set explicitly to another value is an
    ArealError naming both fields. A workflow config that is not a
    :class:`~areal_core.config.base.WorkflowConfigBase` declares no sampling temperature: τ = 1.
    """
    workflow = cfg.components["workflow"]
    if not isinstance(workflow, WorkflowConfigBase):
        return 1.0
    sampling = workflow.temperature
    tau = float(sampling) if sampling > 0 else 1.0  # greedy logprobs are the model's own (τ = 1)
    errors = []
    for path in ("actor", "algorithm"):
        section = cfg.components.get(path)
        if section is None or "temperature" not in type(section).model_fields:
            continue
        temperature = getattr(section, "temperature")  # noqa: B009 - a field of this model (checked above)
        if "temperature" in section.model_fields_set and not math.isclose(temperature, tau):
            errors.append(f"{path}.temperature is {temperature:g} but workflow.temperature is {sampling:g}: "
                          f"the loss must use the sampling temperature {tau:g} (set {path}.temperature={tau:g} or leave it unset)")
        elif "temperature" not in section.model_fields_set:
            cfg.components[path] = section.model_copy(update={"temperature": tau})
    if errors:
        raise ArealError("invalid config:\n  " + "\n  ".join(errors))
    return tau


def create_train_engine(cfg: ResolvedConfig, path: str, context: RunContext, registry=None) -> TrainEngine:
    """Build the train engine configured at ``path`` with ``context``, refuse a layout it cannot run
    (``context.parallel``: t/p/c/e it does not declare), then initialise it."""
    engine = cfg.create(path, registry=registry, run=context)
    require_parallel_support(engine, f"train engine {cfg.components[path].name!r} ({path})", context.parallel)
    engine.initialize()
    return engine


class RLTrainer:
    """One trainer rank of an RL run. Rank 0 also owns the rollout side (controller, eval, logs).

    ``cfg``: the resolved run config. ``server_addrs``: the running inference servers.
    ``registry``: where components are looked up (default: the process-wide registry).
    ``host_addr``: where the servers reach this process (the distributed weight-sync group's
    master address).
    """

    def __init__(self, cfg: ResolvedConfig[RunConfig], run_dir: str | Path, server_addrs: list[str], *, registry=None,
                 rank: int = 0, world_size: int = 1, host_addr: str = "127.0.0.1", server_status=None):
        self.cfg = cfg
        self.run = cfg.run
        self.run_dir = Path(run_dir)
        self.addrs = list(server_addrs)
        self.registry = registry
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.step = 0  # completed steps
        self.weight_version = WeightVersion(0)  # owned here: set once the servers serve new weights
        self.host_addr = host_addr
        self.server_status = server_status  # the scheduler, when it can describe and restart servers
        self.counters = {"trained_groups": 0, "trained_samples": 0, "trained_tokens": 0, "train_time_s": 0.0}
        # built by setup() (the rollout side on the main rank only), used after it
        self.actor: TrainEngine | None = None
        self.critic: TrainEngine | None = None
        self.ref: TrainEngine | None = None
        self.controller: RolloutController | None = None
        self.metrics: MetricsLogger | None = None
        self.progress: Progress | None = None
        self.updater: WeightUpdater | None = None
        self._sync_bytes = 0
        self._busy_mark: tuple[float, float] | None = None  # (client busy_s, perf_counter) at the last step's metrics
        self._last_checkpoint_s: float | None = None

    # ============================================================== setup
    def _create(self, path: str, **deps):
        return self.cfg.create(path, registry=self.registry, **deps)

    def setup(self) -> None:
        run = self.run
        reconcile_temperatures(self.cfg)
        self.algorithm = self._create("algorithm")
        per_step = (self.algorithm.optimizer_steps_per_train_step()
                    if isinstance(self.algorithm, SupportsOptimizerStepCount) else 1)
        context = RunContext(run.model_path, run.seed, run.trainer.total_steps * per_step, self.run_dir, self.rank,
                             self.world_size, self.weight_version, layout_of(self.cfg, "actor", self.world_size),
                             device=self._create("device"))
        self.actor = create_train_engine(self.cfg, "actor", context, self.registry)
        if run.critic is not None:
            self.critic = create_train_engine(self.cfg, "critic", context, self.registry)
        if run.ref is not None:
            self.ref = create_train_engine(self.cfg, "ref", context, self.registry)
        if run.weight_sync.type == "adapter" and not isinstance(self.actor, SupportsAdapterExport):
            raise ArealError(f"weight_sync.type=adapter: train engine {run.actor['name']!r} cannot export a LoRA adapter "
                             f"alone (no export_adapter); use weight_sync.type=disk or distributed")
        if self.is_main:
            self._setup_rollout()

    def _setup_rollout(self) -> None:
        from transformers import AutoTokenizer

        from areal_core.data.dataset import EpochDataLoader, load_rows
        from areal_core.rollout.client import RolloutClient
        from areal_core.rollout.controller import RolloutController
        from areal_core.rollout.reward_runner import RewardRunner

        run = self.run
        self.tokenizer = AutoTokenizer.from_pretrained(run.model_path)
        self.backend = self._create("inference")
        reward = RewardRunner.from_config(self._create("reward"), run.rollout)
        self.workflow = self._create("workflow", reward=reward, tokenizer=self.tokenizer)
        self.train_loader = EpochDataLoader(load_rows(run.train_dataset, "train_dataset"), seed=run.seed,
                                            shuffle=run.train_dataset.shuffle)
        self.valid_rows = load_rows(run.valid_dataset, "valid_dataset") if run.valid_dataset else None
        self.eval_workflow = self._eval_workflow(reward) if self.valid_rows else None
        if run.trainer.verify_weight_sync and not isinstance(self.backend, SupportsWeightsChecksum):
            raise ArealError(f"trainer.verify_weight_sync: inference backend {run.inference['name']!r} has no "
                             f"weights_checksum method; set trainer.verify_weight_sync=false")
        self.updater = self.backend.weight_updater(self._weight_update_meta())

        state = self._recover_state()
        self.step = int(state["step"]) if state else 0
        self.weight_version.set(self.step)  # the restored weights are pushed as this version
        self.client = client = RolloutClient.from_config(self.backend, self.addrs, run.rollout, self.weight_version)
        if self.server_status is not None:
            client.describe_server = self.server_status.describe_server
            client.restart_server = self.server_status.restart_server
        if run.weight_sync.type == "distributed" and client.on_server_lost != "stop":
            client.on_server_lost = "stop"  # the broadcast group includes every server: it cannot shrink
            log.info("weight_sync.type=distributed: a lost inference server stops the run (rollout.on_server_lost)")
        self.eval_client = RolloutClient.from_config(self.backend, self.addrs, run.rollout, self.weight_version)
        self.controller = RolloutController(client, run.rollout, keep_group=self.algorithm)
        if state:
            self.train_loader.check_state(state["dataset"])
            self.controller.load_state_dict(state["controller"])
            self.counters.update(state.get("counters", {}))
        # rows of steps that run again (after the checkpoint; all of them without one) are dropped
        kept_step = self.step if state else -1
        for name in (AUDIT_FILE, METRICS_FILE, ROLLOUTS_FILE):
            _truncate_jsonl(self.run_dir / name, kept_step)
        self.metrics = MetricsLogger.create(self.cfg.of_kind("metric_sink"), self.run_dir, registry=self.registry)

    def _weight_update_meta(self) -> WeightUpdateMeta:
        sync = self.run.weight_sync
        meta = WeightUpdateMeta(type=sync.type, bucket_bytes=sync.bucket_mb << 20)
        if sync.type == "distributed":
            from areal_core.launcher.support import free_port

            meta.master_address = self.host_addr
            meta.master_port = free_port(self.host_addr)
            meta.backend = self._create("device").comm_backend
        return meta

    def _eval_workflow(self, reward):
        """The workflow with ``trainer.eval_temperature`` / ``eval_n_samples`` as its sampling (a
        workflow config that is no WorkflowConfigBase keeps its own)."""
        wf_cfg = self.cfg.components["workflow"]
        config = wf_cfg
        if isinstance(wf_cfg, WorkflowConfigBase):
            config = type(wf_cfg).model_validate({**wf_cfg.model_dump(), "temperature": self.run.trainer.eval_temperature,
                                                  "n_samples": self.run.trainer.eval_n_samples})
        registry = self.registry or _default_registry()
        return registry.create("workflow", wf_cfg.name, config, reward=reward, tokenizer=self.tokenizer)

    def _recover_state(self) -> dict[str, Any] | None:
        """Rank 0: the trainer state of the checkpoint to resume from (engines are loaded by all ranks)."""
        found = ckpt.recovery_point(self.run_dir, self.run.recover)
        if found is None:
            return None
        path, state = found
        log.info("recovering", checkpoint=str(path), step=state["step"])
        return state

    # ============================================================== the loop
    def run_loop(self) -> dict[str, Any]:
        """Train until ``trainer.total_steps``; returns the last step's metrics (rank 0)."""
        total = self.run.trainer.total_steps
        self.step = self._share(self.step)
        self.weight_version.set(self.step)
        if self.step > 0:
            self._load_engines(ckpt.latest_checkpoint(self.run_dir) if self.is_main else None)
        if self.is_main:
            assert self.controller is not None and self.updater is not None  # built by _setup_rollout
            self.controller.connect_updater(self.updater)
        if self.step > 0:
            self._sync_weights(StepTimer())  # fresh servers get the restored weights as version `step`
        elif self._eval_due(0):
            self._log(0, self._evaluate())
        last: dict[str, Any] = {}
        self._start_progress(total)
        try:
            while self.step < total:
                last = self._train_one_step()
        finally:
            self._stop_progress()
        return last

    def _train_one_step(self) -> dict[str, Any]:
        assert self.actor is not None  # built by setup()
        s = self.step
        timer = StepTimer()
        start = time.perf_counter()
        if self._busy_mark is None and self.is_main:
            self._busy_mark = (self.client.busy_s(), start)
        with timer.phase("gen_wait_s"):
            trajectories = self._share(self._prepare_batch())
        from areal_core.data.batch import SequenceBatch

        with timer.phase("train_s"):
            stats = self.algorithm.train_step(SequenceBatch.from_trajectories(trajectories), self.actor, self.critic,
                                              self.ref)
        self.step = s + 1
        self._sync_weights(timer)
        metrics: dict[str, Any] = {}
        if self._eval_due(self.step):
            with timer.phase("eval_s"):
                metrics.update(self._evaluate())
        trainer = self.run.trainer
        if (trainer.save_every and self.step % trainer.save_every == 0) or self.step == trainer.total_steps:
            with timer.phase("export_s"):
                self.actor.export_hf(str(self.run_dir / EXPORT_DIR / f"step{self.step}"))
        step_s = time.perf_counter() - start
        if self.is_main:
            metrics.update(self._step_metrics(trajectories, stats, timer, step_s))
            # logged before the checkpoint: a recovery drops rows newer than the checkpoint it resumes
            self._audit(trajectories)
            self._log_rollouts(trajectories)
            self._log(self.step, metrics)
        if trainer.checkpoint_every and (self.step % trainer.checkpoint_every == 0 or self.step == trainer.total_steps):
            start = time.perf_counter()
            self._checkpoint()
            self._last_checkpoint_s = time.perf_counter() - start  # reported with the next step
        return metrics

    def _prepare_batch(self) -> list[Trajectory] | None:
        if not self.is_main:
            return None
        assert self.controller is not None  # built by _setup_rollout
        return self.controller.prepare_batch(self.train_loader, self.workflow)

    # ============================================================== weights
    def _sync_weights(self, timer: StepTimer) -> None:
        """Make every server serve the actor's weights as version ``self.step`` (all ranks call:
        exports and ``named_full_weights`` are collective), then set the run's weight version."""
        assert self.actor is not None  # built by setup()
        version = self.step
        path = self.run_dir / WEIGHTS_DIR / f"v{version}"
        kind = self.run.weight_sync.type
        with timer.phase("export_weights_s"):  # generation goes on meanwhile
            if kind == "disk":
                self.actor.export_hf(str(path))
            elif kind == "adapter":
                assert isinstance(self.actor, SupportsAdapterExport)  # checked in setup
                self.actor.export_adapter(str(path))
        weights = self.actor.named_full_weights() if kind == "distributed" else str(path)
        if self.is_main:
            assert self.controller is not None and self.updater is not None  # built by _setup_rollout
            with timer.phase("pause_s"):
                self.controller.pause()
            try:
                with timer.phase("weight_sync_s"):
                    self._sync_bytes = self.controller.push_weights(self.updater, weights, version)
                self.weight_version.set(version)
            finally:
                self.controller.resume()
                self.addrs = self.eval_client.addrs = list(self.client.addrs)  # lost servers are left out
            if kind != "distributed":
                self._remove_old_weights(version)
        else:
            for _ in weights if kind == "distributed" else ():  # the collective gather, received by rank 0
                pass
            self.weight_version.set(version)
        if self.run.trainer.verify_weight_sync:
            with timer.phase("verify_s"):
                self._verify_weights(version)

    def _remove_old_weights(self, keep_version: int) -> None:
        root = self.run_dir / WEIGHTS_DIR
        for old in root.glob("v*"):
            if old.name != f"v{keep_version}":
                shutil.rmtree(old, ignore_errors=True)

    def _verify_weights(self, version: int) -> None:
        import httpx

        from areal_core.checksum import tensors_checksum

        assert self.actor is not None  # built by setup()
        mine = tensors_checksum(self.actor.named_full_weights())
        if not self.is_main:
            return

        backend = self.backend
        assert isinstance(backend, SupportsWeightsChecksum)  # checked in setup

        assert self.controller is not None  # rank 0 owns the rollout side
        live = list(self.controller.engine.addrs)  # a server lost under on_server_lost=continue is gone

        async def ask(http):
            async def one(addr):
                try:
                    return await asyncio.wait_for(backend.weights_checksum(http, addr), self.run.rollout.control_timeout_s)
                except (httpx.TransportError, asyncio.TimeoutError) as exc:
                    return exc
            return await asyncio.gather(*(one(a) for a in live))

        theirs = _run_with_http(ask)
        # a server that died after taking the weights is not a wrong sync: the next pause or push
        # finds it lost and handles it (rollout.on_server_lost)
        bad = []
        for addr, answer in zip(live, theirs):
            if isinstance(answer, BaseException):
                log.warning("weights not verified: the server did not answer", server=addr, version=version,
                            error=f"{type(answer).__name__}: {answer}")
            elif answer != mine:
                bad.append(f"{addr}: {answer}")
        if bad:
            raise ArealError(f"weight sync to version {version}: server weights differ from the trainer's "
                             f"(trainer {mine}; " + "; ".join(bad) + ")")
        log.debug("weights verified", version=version, checksum=mine)

    # ============================================================== eval
    def _eval_due(self, step: int) -> bool:
        if self.run.valid_dataset is None:
            return False
        every = self.run.trainer.eval_every
        return step == 0 or step == self.run.trainer.total_steps or bool(every and step % every == 0)

    def _evaluate(self) -> dict[str, float]:
        """Mean reward of the eval workflow over the held-out rows, at the servers' current weights."""
        if not self.is_main:
            return {}
        start = time.perf_counter()
        rewards, failed = asyncio.run(self._eval_episodes())
        out = {"eval/reward_mean": sum(rewards) / len(rewards) if rewards else float("nan"),
               "eval/n": float(len(rewards)), "eval/failed": float(failed),
               "timing/eval_s": time.perf_counter() - start}
        log.info("eval", step=self.step, reward_mean=round(out["eval/reward_mean"], 4), n=len(rewards), failed=failed)
        return out

    async def _eval_episodes(self) -> tuple[list[float], int]:
        assert self.valid_rows is not None  # _eval_due: only runs with a valid_dataset
        limit = asyncio.Semaphore(self.run.rollout.max_concurrent_rollouts)

        async def one(row):
            async with limit:
                try:
                    return await self.eval_workflow.run_episode(self.eval_client, row)
                except Exception as exc:  # noqa: BLE001 - one failed episode does not void the eval
                    log.warning("eval episode failed", sample_id=row.get("sample_id"), error=f"{type(exc).__name__}: {exc}")
                    return None

        try:
            groups = await asyncio.gather(*(one(r) for r in self.valid_rows))
        finally:
            await self.eval_client.aclose()
        rewards = [t.reward for g in groups if g for t in g]
        return rewards, sum(1 for g in groups if not g)

    # ============================================================== checkpoint
    def _checkpoint(self) -> None:
        engines = {"actor": self.actor, **({"critic": self.critic} if self.critic is not None else {})}
        state = None
        if self.is_main:
            assert self.controller is not None  # built by _setup_rollout
            state = {"version": self.step, "controller": self.controller.state_dict(),
                     "dataset": self.train_loader.state_dict(), "counters": dict(self.counters)}
        ckpt.save_checkpoint(self.run_dir, self.step, engines, state or {}, rank=self.rank, barrier=self._barrier,
                             keep=self.run.trainer.keep_checkpoints)

    def _load_engines(self, path: Path | None) -> None:
        path = self._share(str(path) if path else None)
        if path is None:
            raise ArealError(f"recover: no checkpoint found under {self.run_dir / ckpt.CHECKPOINT_DIR}")
        assert self.actor is not None  # built by setup()
        self.actor.load(str(Path(path) / "actor"))
        if self.critic is not None:
            self.critic.load(str(Path(path) / "critic"))

    # ============================================================== metrics
    def _step_metrics(self, trajectories: list[Trajectory], stats: dict[str, float], timer: StepTimer,
                      step_s: float) -> dict[str, Any]:
        trained_tokens = sum(sum(t.loss_mask) for t in trajectories)
        self.counters["trained_groups"] += len({t.group_id for t in trajectories})
        self.counters["trained_samples"] += len(trajectories)
        self.counters["trained_tokens"] += trained_tokens
        self.counters["train_time_s"] += step_s
        out: dict[str, Any] = {f"train/{k}": v for k, v in stats.items()}
        assert self.controller is not None  # built by _setup_rollout (main rank)
        out.update(self.controller.metrics())
        out.update({f"timing/{k}": v for k, v in timer.times.items()})
        out["timing/step_s"] = step_s
        if self._last_checkpoint_s is not None:
            out["timing/last_checkpoint_s"], self._last_checkpoint_s = self._last_checkpoint_s, None
        out["throughput/trained_tokens_per_s"] = trained_tokens / step_s if step_s > 0 else 0.0
        out.update(self._busy_fractions(timer, step_s))
        out["throughput/trained_tokens"] = float(trained_tokens)
        out["weight_sync/bytes"] = float(self._sync_bytes)
        out.update({f"total/{k}": float(v) for k, v in self.counters.items()})
        out["version"] = float(self.step)
        return out

    def _busy_fractions(self, timer: StepTimer, step_s: float) -> dict[str, float]:
        """How much the two sides overlap: ``timing/trainer_busy_fraction`` = train_s / step_s;
        ``inference/busy_fraction`` = the share of the wall time since the last step's metrics during
        which at least one rollout generate request was in flight (eval requests not counted)."""
        now, busy = time.perf_counter(), self.client.busy_s()
        last_busy, last_t = self._busy_mark or (busy, now)
        self._busy_mark = (busy, now)
        return {"timing/trainer_busy_fraction": timer.times.get("train_s", 0.0) / step_s if step_s > 0 else 0.0,
                "inference/busy_fraction": (busy - last_busy) / (now - last_t) if now > last_t else 0.0}

    def _audit(self, trajectories: list[Trajectory]) -> None:
        """One line of ``trained_samples.jsonl``: the ids trained by this step and the versions of
        their generated tokens: the oldest, the newest, and the oldest of the groups' newest tokens
        (when the slowest member of a group finished: what admission control bounds)."""
        by_group: dict[str, list[int]] = {}
        for t in trajectories:
            by_group.setdefault(t.group_id, []).extend(v for m, v in zip(t.loss_mask, t.versions) if m and v >= 0)
        flat = [v for vs in by_group.values() for v in vs]
        finished = [max(vs) for vs in by_group.values() if vs]
        row = {"step": self.step, "version_trained_on": self.step - 1,
               "sample_ids": sorted({t.sample_id for t in trajectories}),
               "group_ids": sorted(by_group),
               "token_version_min": min(flat) if flat else None,
               "token_version_max": max(flat) if flat else None,
               "group_finished_version_min": min(finished) if finished else None}
        with open(self.run_dir / AUDIT_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _log_rollouts(self, trajectories: list[Trajectory]) -> None:
        """Append ``trainer.log_rollouts_per_step`` trajectories of this step, sampled with the run's
        seed, to ``rollouts.jsonl``: the decoded prompt (tokens before the first trained one) and
        completion, the reward and the versions of the trained tokens."""
        k = min(self.run.trainer.log_rollouts_per_step, len(trajectories))
        if k == 0:
            return
        picked = random.Random(f"{self.run.seed}:{self.step}").sample(trajectories, k)
        with open(self.run_dir / ROLLOUTS_FILE, "a", encoding="utf-8") as f:
            for t in picked:
                first = t.loss_mask.index(1) if 1 in t.loss_mask else len(t.input_ids)
                versions = [v for m, v in zip(t.loss_mask, t.versions) if m and v >= 0]
                row = {"step": self.step, "sample_id": t.sample_id, "group_id": t.group_id,
                       "prompt": self.tokenizer.decode(t.input_ids[:first]),
                       "completion": self.tokenizer.decode(t.input_ids[first:]), "reward": t.reward,
                       "finish_reason": t.finish_reason, "version_min": min(versions, default=None),
                       "version_max": max(versions, default=None)}
                f.write(json.dumps(row) + "\n")

    def _log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main or not metrics:
            return
        assert self.metrics is not None  # built by _setup_rollout
        self.metrics.log(step, metrics)
        shown = {k: round(float(metrics[k]), 4) for k in ("train/reward/mean", "eval/reward_mean", "train/actor/grad_norm",
                                                           "rollout/version_lag_max", "timing/step_s") if k in metrics}
        log.info("step", step=step, **shown)
        if self.progress is not None:
            self.progress.update(self._task, completed=step,
                                 reward=shown.get("train/reward/mean", float("nan")))

    def _start_progress(self, total: int) -> None:
        if not self.is_main or not sys.stderr.isatty():
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("reward {task.fields[reward]:.3f}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), transient=False)
        self._task = self.progress.add_task("train", total=total, completed=self.step, reward=float("nan"))
        self.progress.start()

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # ============================================================== ranks
    def _share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled over the trainer group). If rank 0 fails
        instead, the driver stops the other ranks (see :mod:`areal_core.trainer.entry`)."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # ============================================================== teardown
    def close(self) -> None:
        if self.controller is not None:
            if self.updater is not None:
                with contextlib.suppress(Exception):  # closing must not hide the error that ended the run
                    self.controller.close_updater(self.updater)
            self.controller.close()
            self.controller = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        for engine in (self.actor, self.critic, self.ref):
            if engine is not None:
                engine.destroy()
        self.actor = self.critic = self.ref = None


def _default_registry():
    from areal_core.registry import get_registry

    return get_registry()


def _run_with_http(fn):
    """Run ``fn(httpx.AsyncClient)`` (a coroutine function) to completion on a fresh event loop."""
    import httpx

    async def main():
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), headers=auth_headers()) as http:
            return await fn(http)

    return asyncio.run(main())


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only the rows of a per-step JSONL file whose ``step`` ≤ ``max_step`` (a torn last line
    is dropped with a warning)."""
    from areal_core.jsonl import keep_rows_through_step

    keep_rows_through_step(path, max_step)
