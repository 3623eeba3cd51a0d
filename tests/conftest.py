"""Fixtures shared by the core tests: a registry holding the built-ins and the toy plugin only."""

from __future__ import annotations

import pytest
import yaml

from areal_core.registry import build_registry, set_registry
from toyplugin import MINIMAL_RUN, ToyPlugin


@pytest.fixture
def toy_registry():
    """Built-ins + :class:`toyplugin.ToyPlugin`, installed as the process-wide registry meanwhile."""
    registry = build_registry(extra_plugins=[(ToyPlugin(), "toy-dist")], entry_points=False)
    set_registry(registry)
    yield registry
    set_registry(None)


@pytest.fixture
def run_yaml(tmp_path):
    """Write a run config (MINIMAL_RUN updated with ``extra``) and return its path."""

    def write(extra: dict | None = None, name: str = "run.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump({**MINIMAL_RUN, **(extra or {})}, sort_keys=False))
        return path

    return write
