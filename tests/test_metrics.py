"""MetricsLogger fan-out and the sinks' value handling (each sink's contract: test_contracts_builtin.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from areal_core import hookimpl
from areal_core.config.base import ComponentConfig
from areal_core.config.loader import load_config
from areal_core.errors import ArealError
from areal_core.logging import configure_logging
from areal_core.metrics import MetricsLogger, read_metrics, to_number
from areal_core.registry import Component, build_registry
from coretest_support import wandb_offline_record


class FlakySink:
    """A sink that fails on odd steps (stands for a W&B outage)."""

    def __init__(self, config, run_dir):
        self.logged, self.closed = [], False

    def log(self, step, metrics):
        if step % 2:
            raise ConnectionError("service unavailable")
        self.logged.append(step)

    def close(self):
        self.closed = True


class FlakyPlugin:
    @hookimpl
    def areal_register_metric_sinks(self):
        return [Component("flaky", FlakySink, None, "fails on odd steps")]


def test_to_number():
    assert to_number(np.float32(0.5)) == 0.5 and to_number(np.int64(3)) == 3 and to_number(True) == 1
    assert to_number(float("nan")) is None and to_number(float("-inf")) is None
    with pytest.raises(ArealError, match="metric value 'fast' \\(str\\) is not a number"):
        to_number("fast")


def test_jsonl_is_always_on_and_appends(tmp_path):
    registry = build_registry(entry_points=False)
    with MetricsLogger.create([], tmp_path, registry) as metrics:
        assert list(metrics.sinks) == ["jsonl"]
        metrics.log(1, {"loss": 0.5, "bad": float("nan")})
    with MetricsLogger.create([ComponentConfig(name="jsonl")], tmp_path, registry) as metrics:  # a recovered run
        metrics.log(2, {"loss": 0.25})
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 0.5), (2, 0.25)] and rows[0]["bad"] is None


def test_fan_out_survives_a_failing_sink(tmp_path):
    registry = build_registry(extra_plugins=[(FlakyPlugin(), "flaky-dist")], entry_points=False)
    log_stream = io.StringIO()
    configure_logging(json_logs=True, stream=log_stream)
    try:
        metrics = MetricsLogger.create([ComponentConfig(name="flaky"), ComponentConfig(name="tensorboard")], tmp_path, registry)
        assert list(metrics.sinks) == ["jsonl", "flaky", "tensorboard"]
        for step in range(1, 5):
            metrics.log(step, {"loss": 1.0 / step})
        metrics.close()
    finally:
        configure_logging(stream=io.StringIO())
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert metrics.sinks["flaky"].logged == [2, 4] and metrics.sinks["flaky"].closed
    warnings = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [(w["event"], w["sink"], w["step"]) for w in warnings] == [("metric sink failed", "flaky", 1), ("metric sink failed", "flaky", 3)]
    assert (tmp_path / "tensorboard").is_dir()


def test_sinks_from_the_run_config(toy_registry, run_yaml, tmp_path):
    cfg = load_config(config_path=run_yaml({"metrics": {"sinks": [{"name": "tensorboard"}]}}), registry=toy_registry)
    with MetricsLogger.create(cfg.of_kind("metric_sink"), tmp_path / "run") as metrics:
        metrics.log(1, {"reward/mean": 0.5})
    assert sorted(metrics.sinks) == ["jsonl", "tensorboard"]
    with pytest.raises(ArealError, match="metric sink 'tensorboard' is listed twice"):
        MetricsLogger.create([ComponentConfig(name="tensorboard")] * 2, tmp_path / "run", toy_registry)


def test_wandb_offline_logs_the_resolved_config(toy_registry, run_yaml, tmp_path, monkeypatch):
    from areal_core.config.loader import save_resolved

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "exp" / "trial"
    cfg = load_config(config_path=run_yaml({"metrics": {"sinks": [{"name": "wandb", "project": "t"}]}, "seed": 4242}), registry=toy_registry)
    save_resolved(cfg, run_dir)
    with MetricsLogger.create(cfg.of_kind("metric_sink"), run_dir, toy_registry) as metrics:
        metrics.log(1, {"loss": 1.0})
    data = wandb_offline_record(run_dir, b"4242", b"toy_engine")
    assert b"4242" in data and b"toy_engine" in data  # the config went with the run
