"""Build train engines for tests the way a run does: by name, with a real :class:`RunContext`.

    from areal_core.testing.engines import run_context, make_train_engine

    run = run_context(model_path)                     # seed 1, 100 steps, weight version 0
    engine = make_train_engine("fsdp", {"optimizer": {"lr": 1e-2}}, run)   # initialized
    ...
    engine.destroy()

The contract suites, the algorithm tests of areal-grpo and third-party tests all use these, so an
engine under test receives exactly what ``areal train`` gives it (a trainer-owned
:class:`~areal_core.api.WeightVersion` it may read but never sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from areal_core.api.protocols import TrainEngine
from areal_core.api.types import RunContext, WeightVersion
from areal_core.registry import Registry, build_registry


def run_context(model_path: str | Path, *, seed: int = 1, total_steps: int = 100, run_dir: str | Path = ".",
                rank: int = 0, world_size: int = 1, weight_version: WeightVersion | None = None,
                device: Any = None) -> RunContext:
    """A :class:`RunContext` as the trainer builds it (version 0 unless one is given; ``device``:
    the run's Device, None as outside a run)."""
    return RunContext(str(model_path), seed, total_steps, Path(run_dir), rank, world_size,
                      weight_version if weight_version is not None else WeightVersion(), device=device)


def make_train_engine(name: str, section: dict[str, Any], run: RunContext, *, registry: Registry | None = None,
                      initialize: bool = True) -> TrainEngine:
    """The ``train_engine`` component ``name`` with config ``section`` (without ``name``), built
    through ``registry`` (default: one built from the installed plugins) and initialized."""
    registry = registry or build_registry()
    engine = registry.create("train_engine", name, section, run=run)
    if initialize:
        engine.initialize()
    return engine
