"""Contract suite for metric sinks: ``factory(config, run_dir)``, ``log(step, metrics)``, ``close()``.

Subclass :class:`MetricSinkContract` and name the component. Override :meth:`read_back` to
return what the sink persisted (``{step: {name: value}}``) so the suite can check it stored the
values it was given; without it, the suite checks everything but persistence::

    class TestJsonlSink(MetricSinkContract):
        plugin = areal_core.builtins
        component_name = "jsonl"

        def read_back(self, run_dir):
            return {row["step"]: row for row in read_metrics(run_dir)}

Checked: logged values come back; numpy scalars and bools are accepted; NaN/inf and an empty
step do not raise; ``close`` may be called twice; nothing is written outside ``run_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from areal_core.api.protocols import MetricSink
from areal_core.testing.contract import ComponentContract

STEPS: dict[int, dict[str, float]] = {
    1: {"loss": 0.5, "reward/mean": 0.25, "timing/train_s": 1.5},
    2: {"loss": 0.375, "reward/mean": 0.5, "timing/train_s": 1.25},
    3: {"loss": 0.25, "reward/mean": 0.75, "timing/train_s": 1.0},
}


class MetricSinkContract(ComponentContract):
    kind = "metric_sink"
    protocol = MetricSink

    @pytest.fixture
    def run_dir(self, tmp_path: Path, monkeypatch) -> Path:
        """The sink's run directory; the working directory is an empty sibling (checked to stay empty)."""
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        return tmp_path / "run"

    @pytest.fixture
    def dependencies(self, run_dir: Path) -> dict[str, Any]:
        return {"run_dir": run_dir}

    def read_back(self, run_dir: Path) -> dict[int, dict[str, float]] | None:
        """What the sink persisted, after ``close``; None when it cannot be read back."""
        return None

    def test_logged_values_are_persisted(self, component, run_dir):
        for step, metrics in STEPS.items():
            component.log(step, metrics)
        component.close()
        stored = self.read_back(run_dir)
        if stored is None:
            pytest.skip(f"{type(self).__name__} does not implement read_back")
        for step, metrics in STEPS.items():
            assert step in stored, f"step {step} missing from what the sink stored: {sorted(stored)}"
            for name, value in metrics.items():
                assert stored[step].get(name) == pytest.approx(value), f"step {step} {name}: stored {stored[step].get(name)!r}"

    def test_accepts_numpy_scalars_and_bools(self, component):
        component.log(1, {"f32": np.float32(0.5), "i64": np.int64(7), "flag": True, "plain_int": 3})
        component.close()

    def test_non_finite_values_and_empty_steps_do_not_raise(self, component):
        component.log(1, {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1.0})
        component.log(2, {})
        component.close()

    def test_close_twice(self, component):
        component.log(1, {"loss": 1.0})
        component.close()
        component.close()

    def test_writes_only_under_run_dir(self, component, run_dir):
        component.log(1, {"loss": 1.0})
        component.close()
        assert os.listdir(".") == [], f"the sink wrote into the working directory: {os.listdir('.')}"
