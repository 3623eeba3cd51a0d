"""The offline loop shared by ``areal sft``, ``areal dpo`` and ``areal rm``.

One :class:`OfflineTrainer` per trainer rank drives a train engine through the
:class:`~areal_core.api.protocols.TrainEngine` protocol; what is trained is an :class:`Objective`
(one small module each: :mod:`areal_core.trainer.sft`, :mod:`areal_core.trainer.pairs`)::

    examples = [objective.encode(row) for row in train rows]      every rank, same order
    objective.prepare(trainer)                                     e.g. reference logprobs, once
    for step s in [start, total_steps):
        rows  = rows [s·B, (s+1)·B) of the concatenated epochs     (EpochDataLoader's seeded order)
        stats = objective.train_step(actor, examples of rows)      one optimizer step
        [eval: objective.evaluate(actor, held-out examples)]       at step 0, every trainer.eval_every, at the end
        metrics.jsonl  (rank 0)
        [checkpoint: RUN_DIR/checkpoints/step{s+1}]                every trainer.checkpoint_every and at the end
    actor.export_hf(output_path)

**Data parallelism.** Every rank runs the same loop on the same global batch (SPMD); the engine
splits it over its ranks and into micro-batches by its token budget, so ``trainer.ranks`` changes
the speed, not the result. ``trainer.ranks`` > 1 starts that many rank processes with a
torchrun-style environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); each
reads the resolved config from ``RUN_DIR/config.yaml``; rank 0 writes metrics and checkpoints.

**Recovery.** A batch is a pure function of the step, so the checkpoint holds only the engine
(model, optimizer, LR schedule, RNG) and the step. ``recover=auto`` loads the newest checkpoint,
drops ``metrics.jsonl`` rows after its step and continues: no row is skipped or trained twice,
and the run ends with the same weights as one never interrupted (tested).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from areal_core.config.loader import (
    RESOLVED_CONFIG_FILE,
    ResolvedConfig,
    load_config,
    save_resolved,
)
from areal_core.errors import ArealError
from areal_core.logging import configure_logging, get_logger
from areal_core.trainer import checkpoint as ckpt

log = get_logger(__name__)

# command -> (config model, objective factory "module:attr")
COMMANDS = {
    "sft": ("areal_core.config.schema:SFTConfig", "areal_core.trainer.sft:SFTObjective"),
    "dpo": ("areal_core.config.schema:DPOConfig", "areal_core.trainer.pairs:PairObjective"),
    "rm": ("areal_core.config.schema:RMConfig", "areal_core.trainer.pairs:PairObjective"),
}


class Objective(Protocol):
    """What one offline command trains (built as ``factory(cfg, tokenizer, command, registry)``)."""

    prefix: str  # metric prefix: the command ("sft", "dpo", "rm")

    def encode(self, row: dict[str, Any], where: str) -> Any:
        """One row as the objective's example (token ids + masks); ``where`` names the row in errors."""

    def prepare(self, trainer: OfflineTrainer) -> None:
        """Once, after the actor is built and before a checkpoint is loaded into it."""

    def train_step(self, actor, examples: list[Any], indices: list[int]) -> dict[str, float]:
        """One optimizer step on ``examples`` (rows ``indices`` of the training set); returns metrics."""

    def evaluate(self, actor, examples: list[Any], batch_size: int) -> dict[str, float]:
        """Held-out metrics without an update (collective: every rank calls it)."""


def _resolve(ref: str):
    from areal_core.registry import _resolve as resolve

    return resolve(ref, "offline command")


class OfflineTrainer:
    """One rank of an offline run (see the module docstring)."""

    def __init__(self, cfg: ResolvedConfig, run_dir: str | Path, command: str, registry=None, rank: int = 0,
                 world_size: int = 1):
        self.cfg, self.run, self.command = cfg, cfg.run, command
        self.run_dir = Path(run_dir)
        self.registry = registry
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        # built by setup(), used after it
        self.actor: Any = None  # a TrainEngine
        self.metrics: Any = None  # a MetricsLogger (rank 0)
        self.valid_examples: list[Any] | None = None
        self.step = 0

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from transformers import AutoTokenizer

        from areal_core.api.types import RunContext
        from areal_core.config.allocation import layout_of
        from areal_core.data.dataset import EpochDataLoader, load_rows
        from areal_core.metrics import METRICS_FILE, MetricsLogger
        from areal_core.trainer.rl import _truncate_jsonl

        run = self.run
        self.tokenizer = AutoTokenizer.from_pretrained(run.model_path)
        self.objective: Objective = _resolve(COMMANDS[self.command][1])(self.cfg, self.tokenizer, self.command,
                                                                                  self.registry)
        rows = load_rows(run.train_dataset, "train_dataset")
        self.loader = EpochDataLoader(rows, seed=run.seed, shuffle=run.train_dataset.shuffle)
        self.examples = self._encode(rows, "train_dataset")
        self.valid_examples = (self._encode(load_rows(run.valid_dataset, "valid_dataset"), "valid_dataset")
                               if run.valid_dataset else None)
        self.context = RunContext(run.model_path, run.seed, run.trainer.total_steps, self.run_dir, self.rank,
                                  self.world_size, parallel=layout_of(self.cfg, "actor", self.world_size),
                                  device=self.cfg.create("device", registry=self.registry))
        self.actor = self.create("actor")
        self.objective.prepare(self)
        state = self._recover()
        if self.is_main:
            _truncate_jsonl(self.run_dir / METRICS_FILE, self.step if state else -1)
            self.metrics = MetricsLogger.create(self.cfg.of_kind("metric_sink"), self.run_dir, registry=self.registry)

    def create(self, path: str):
        """Build and initialise the train engine configured at ``path`` (``actor``, ``ref``)."""
        from areal_core.trainer.rl import create_train_engine

        return create_train_engine(self.cfg, path, self.context, self.registry)

    def _encode(self, rows: list[dict[str, Any]], dataset: str) -> list[Any]:
        from areal_core.data.preference import row_label

        return [self.objective.encode(row, row_label(row, i, dataset)) for i, row in enumerate(rows)]

    def _recover(self) -> dict[str, Any] | None:
        found = ckpt.recovery_point(self.run_dir, self.run.recover)
        if found is None:
            return None
        path, state = found
        self.loader.check_state(state["dataset"])
        if state.get("command") != self.command:
            raise ArealError(f"recover: {path} was written by `areal {state.get('command')}`, not `areal {self.command}`")
        self.actor.load(str(path / "actor"))
        self.step = int(state["step"])
        log.info("recovering", checkpoint=str(path), step=self.step)
        return state

    # ------------------------------------------------------------------ the loop
    def batch_indices(self, step: int) -> tuple[list[int], int]:
        """(row indices of step ``step``, epoch of its first row)."""
        n, size = len(self.examples), self.run.trainer.batch_size
        out = [self._order(position // n)[position % n] for position in range(step * size, (step + 1) * size)]
        return out, step * size // n

    def _order(self, epoch: int) -> list[int]:
        if getattr(self, "_order_epoch", None) != epoch:
            self._order_epoch, self._order_cache = epoch, self.loader.order(epoch)
        return self._order_cache

    def train(self) -> Path:
        """Run the remaining steps, evaluate, checkpoint, export; returns the exported model directory."""
        trainer, prefix = self.run.trainer, self.objective.prefix
        start = time.perf_counter()
        if self.step == 0 and self.valid_examples:  # the starting point, logged as step 0
            metrics = self._evaluate()
            if self.is_main:
                self.metrics.log(0, metrics)
        while self.step < trainer.total_steps:
            t0 = time.perf_counter()
            indices, epoch = self.batch_indices(self.step)
            metrics = self.objective.train_step(self.actor, [self.examples[i] for i in indices], indices)
            metrics.update({f"{prefix}/epoch": float(epoch), "timing/step_s": time.perf_counter() - t0})
            self.step += 1
            done = self.step
            if self.valid_examples and ((trainer.eval_every and done % trainer.eval_every == 0)
                                        or done == trainer.total_steps):
                metrics.update(self._evaluate())
            if self.is_main:
                self.metrics.log(done, metrics)
                if done % trainer.log_every == 0 or done == trainer.total_steps:
                    shown = {k.split("/", 1)[1]: round(v, 4) for k, v in metrics.items()
                             if k in (f"{prefix}/loss", f"{prefix}/accuracy", f"{prefix}/eval_loss", f"{prefix}/eval_accuracy")}
                    log.info(f"{self.command} step", step=done, of=trainer.total_steps, **shown,
                             elapsed_s=round(time.perf_counter() - start, 1))
            if trainer.checkpoint_every and (done % trainer.checkpoint_every == 0 or done == trainer.total_steps):
                self._checkpoint()
        out = Path(self.run.output_path or self.run_dir / "export").expanduser()
        self.actor.export_hf(str(out))
        if self.is_main:
            log.info(f"{self.command} model exported", path=str(out), total_s=round(time.perf_counter() - start, 1))
        return out

    def _evaluate(self) -> dict[str, float]:
        assert self.valid_examples is not None  # called only with a valid_dataset
        result = self.objective.evaluate(self.actor, self.valid_examples, self.run.trainer.batch_size)
        return {f"{self.objective.prefix}/eval_{k}": v for k, v in result.items()}

    def _checkpoint(self) -> None:
        state = {"command": self.command, "dataset": self.loader.state_dict()}
        ckpt.save_checkpoint(self.run_dir, self.step, {"actor": self.actor}, state, rank=self.rank,
                             barrier=self._barrier)

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.actor is not None:
            self.actor.destroy()
            self.actor = None


# ---------------------------------------------------------------------- running a command
def run_offline(command: str, cfg: ResolvedConfig, registry=None) -> Path:
    """Everything ``areal sft|dpo|rm`` does after loading the config; returns the exported model directory."""
    from areal_core.hub import resolve_model_path
    from areal_core.trainer.entry import _check_run_dir, quiet_libraries, run_dir_of

    run = cfg.run
    run_dir = run_dir_of(cfg)
    _check_run_dir(run_dir, run.recover)
    problems = [f"{name}.path: {getattr(run, name).path!r} does not exist" for name in ("train_dataset", "valid_dataset")
                if getattr(run, name) is not None and not Path(getattr(run, name).path).expanduser().exists()]
    try:
        run.model_path = resolve_model_path(run.model_path)  # a hub id becomes its cached snapshot directory
    except ArealError as exc:
        problems.insert(0, str(exc))
    if problems:
        raise ArealError("invalid config:\n  " + "\n  ".join(problems))
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(level=run.logging.level, json_logs=run.logging.json_logs, file=run_dir / "log.jsonl")
    quiet_libraries()
    save_resolved(cfg, run_dir)
    if run.trainer.ranks > 1:
        _launch_ranks(command, run_dir, run.trainer.ranks)
        return Path(run.output_path or run_dir / "export").expanduser()
    return run_rank(command, cfg, run_dir, registry=registry)


def run_rank(command: str, cfg: ResolvedConfig, run_dir: Path, *, rank: int = 0, world_size: int = 1,
             registry=None) -> Path:
    """One rank of an offline run: set up, train, release everything."""
    trainer = OfflineTrainer(cfg, run_dir, command, registry=registry, rank=rank, world_size=world_size)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        trainer.close()


def _launch_ranks(command: str, run_dir: Path, ranks: int) -> None:
    """``ranks`` processes of this command on this machine (the ``local`` scheduler's trainer launch)."""
    from areal_core.launcher.local import LocalScheduler

    argv = [sys.executable, "-m", "areal_core.trainer.offline", command, "--rank-of", str(run_dir)]
    with LocalScheduler() as scheduler:
        scheduler.prepare(run_dir)
        handles = scheduler.launch_trainers(argv, ranks, {})
        log.info(f"{command} ranks started", ranks=ranks, logs=str(run_dir / "logs"))
        scheduler.wait(handles)


def command_main(command: str, argv: list[str] | None = None) -> int:
    """The ``areal sft|dpo|rm`` command line."""
    from areal_core.trainer.entry import _terminate_as_interrupt

    descriptions = {"sft": "Supervised fine-tuning (packed NLL on every assistant turn).",
                    "dpo": "Direct preference optimisation against a frozen reference (see docs/alignment.md).",
                    "rm": "Reward modelling on preference pairs (Bradley-Terry; see docs/alignment.md)."}
    parser = argparse.ArgumentParser(prog=f"areal {command}", description=descriptions[command])
    parser.add_argument("--config", type=Path, help=f"YAML config ({COMMANDS[command][0].replace(':', '.')})")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. trainer.total_steps=50")
    args = parser.parse_args(argv)
    cfg = load_config(_resolve(COMMANDS[command][0]), config_path=args.config, overrides=args.overrides)
    _terminate_as_interrupt()
    out = run_offline(command, cfg)
    print(f"{command} finished: model in {out}")
    return 0


def rank_main(argv: list[str] | None = None) -> int:
    """Entry of a rank process started by :func:`_launch_ranks`."""
    import os

    from areal_core.trainer.entry import _terminate_as_interrupt, quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m areal_core.trainer.offline")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--rank-of", type=Path, required=True, help="run directory holding the resolved config")
    args = parser.parse_args(argv)
    cfg = load_config(_resolve(COMMANDS[args.command][0]), config_path=args.rank_of / RESOLVED_CONFIG_FILE,
                      env_prefix=None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    configure_logging(level=cfg.run.logging.level if rank == 0 else "warning", json_logs=cfg.run.logging.json_logs)
    quiet_libraries()
    _terminate_as_interrupt()
    run_rank(args.command, cfg, args.rank_of, rank=rank, world_size=world)
    return 0


def sft_main(argv: list[str] | None = None) -> int:
    return command_main("sft", argv)


def dpo_main(argv: list[str] | None = None) -> int:
    return command_main("dpo", argv)


def rm_main(argv: list[str] | None = None) -> int:
    return command_main("rm", argv)


if __name__ == "__main__":
    sys.exit(rank_main())
