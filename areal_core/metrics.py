"""Metric sinks (jsonl, wandb, tensorboard) and the fan-out the trainer logs through.

A sink is built as ``factory(config, run_dir)`` and receives ``log(step, {name: number})`` once
per step. Values may be Python numbers, bools, numpy or 0-d torch scalars (``.item()`` is
taken). ``jsonl`` is always on; others are chosen by name under ``metrics.sinks`` in the run
config.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from areal_core.config.base import ComponentConfig
from areal_core.errors import ArealError

log = structlog.get_logger(__name__)

METRICS_FILE = "metrics.jsonl"


def to_number(value: Any) -> float | int | None:
    """A metric value as a plain number; None for NaN/inf (JSON has no spelling for them).

    Raises ArealError for something that is not a number.
    """
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise ArealError(f"metric value {value!r} ({type(value).__name__}) is not a number")


class JsonlSink:
    """Appends one line per step to ``RUN_DIR/metrics.jsonl``: ``{"step": s, "time": unix_s, ...}``.

    Appends (never truncates), so a recovered run continues the same file; NaN/inf are written as
    null. Each line is flushed as it is written.
    """

    def __init__(self, config: ComponentConfig | None, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        row.update({k: to_number(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows a :class:`JsonlSink` wrote, in order."""
    from areal_core.jsonl import read_rows

    return read_rows(Path(run_dir) / METRICS_FILE)


class WandbConfig(ComponentConfig):
    """Weights & Biases options; ``WANDB_*`` environment variables apply as usual."""

    project: str = Field("areal", description="W&B project")
    entity: str | None = Field(None, description="W&B team or user (default: your default entity)")
    run_name: str | None = Field(None, description="run name (default: the run directory's experiment/trial)")
    group: str | None = Field(None, description="groups runs in the W&B UI")
    tags: list[str] = Field(default_factory=list, description="run tags")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online / offline (no network, `wandb sync` later) / disabled; default: WANDB_MODE or online"
    )


class WandbSink:
    """Logs to a W&B run whose files live in ``RUN_DIR/wandb``. The run's config is the resolved
    config saved in ``RUN_DIR/config.yaml``, when present."""

    def __init__(self, config: WandbConfig, run_dir: str | Path):
        try:
            import wandb
        except ImportError:
            raise ArealError("metric sink 'wandb' needs the wandb package: pip install 'areal-core[wandb]'") from None
        from areal_core.config.loader import RESOLVED_CONFIG_FILE
        from areal_core.config.yamlio import read_yaml_file

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = run_dir / RESOLVED_CONFIG_FILE
        self._run = wandb.init(
            project=config.project,
            entity=config.entity,
            name=config.run_name or f"{run_dir.parent.name}/{run_dir.name}",
            group=config.group,
            tags=config.tags or None,
            mode=config.mode or os.environ.get("WANDB_MODE") or "online",  # type: ignore[arg-type]  # env: wandb checks it
            dir=str(run_dir),
            config=read_yaml_file(saved)[0] if saved.exists() else None,
            settings=wandb.Settings(silent=True, console="off"),
            reinit="create_new",
        )
        self._closed = False

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in ((k, to_number(v)) for k, v in metrics.items()) if v is not None}, step=int(step))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._run.finish()


class TensorboardSink:
    """Writes scalar summaries to event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir``).

    Uses tensorboard's own event writer, so it does not import torch. NaN/inf are skipped.
    """

    def __init__(self, config: ComponentConfig | None, run_dir: str | Path):
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ArealError("metric sink 'tensorboard' needs the tensorboard package: pip install 'areal-core[tensorboard]'") from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(self.log_dir))
        self._closed = False

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        values = [self._summary.Value(tag=k, simple_value=float(v))
                  for k, v in ((k, to_number(v)) for k, v in metrics.items()) if v is not None]
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()


class MetricsLogger:
    """Sends each step's metrics to every sink; ``jsonl`` is always one of them.

    A sink that raises is reported as a warning and the others still receive the step (a W&B
    outage must not stop training; ``metrics.jsonl`` stays complete).
    """

    def __init__(self, sinks: dict[str, Any]):
        self.sinks = sinks

    @classmethod
    def create(cls, sink_configs: list[ComponentConfig], run_dir: str | Path, registry=None) -> MetricsLogger:
        """Build the configured sinks by name (``jsonl`` added when absent) for ``run_dir``."""
        from areal_core.registry import get_registry

        registry = registry or get_registry()
        configs = list(sink_configs)
        if not any(c.name == "jsonl" for c in configs):
            configs.insert(0, ComponentConfig(name="jsonl"))
        sinks: dict[str, Any] = {}
        try:
            for cfg in configs:
                if cfg.name in sinks:
                    raise ArealError(f"metric sink {cfg.name!r} is listed twice under metrics.sinks")
                sinks[cfg.name] = registry.create("metric_sink", cfg.name, cfg, run_dir=Path(run_dir))
        except BaseException:
            cls(sinks).close()
            raise
        return cls(sinks)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.log(step, metrics)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the run
                log.warning("metric sink failed", sink=name, step=step, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("metric sink failed to close", sink=name, error=f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
