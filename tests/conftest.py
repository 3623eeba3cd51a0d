"""Fixtures shared by the core tests: temporary plugins, never the installed ones."""

from __future__ import annotations

import importlib
from pathlib import Path

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


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Make an installed-looking distribution: ``fake_dist(name, version, entry_points, modules)``.

    Writes ``<name>-<version>.dist-info`` (METADATA + an ``[areal]`` entry_points.txt) and the
    given modules into one site directory, puts it on ``sys.path`` for this test, and returns
    the directory (put it on PYTHONPATH for subprocesses, with :func:`subprocess_env`).
    """
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))

    def make(name: str, version: str = "0.1.0", entry_points: dict[str, str] | None = None,
             modules: dict[str, str] | None = None) -> Path:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{k} = {v}\n" for k, v in (entry_points or {}).items())
        (info / "entry_points.txt").write_text(f"[areal]\n{lines}")
        for module, source in (modules or {}).items():
            (site / f"{module}.py").write_text(source)
        importlib.invalidate_caches()
        return site

    return make
