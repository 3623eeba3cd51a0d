"""Fixtures shared by the core tests: temporary plugins, never the installed ones."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import yaml

from areal_core.registry import build_registry, set_registry
from toyplugin import MINIMAL_RUN, ToyPlugin

TESTS_DIR = Path(__file__).resolve().parent


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


def subprocess_env(*paths: Path, **extra: str) -> dict[str, str]:
    """The environment for a child ``python``: ``paths`` and tests/ on PYTHONPATH, no debug/log env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AREAL_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


PYTHON = sys.executable


def wandb_offline_record(run_dir: Path, *needles: bytes, timeout_s: float = 15.0) -> bytes:
    """The bytes of the one offline W&B run under ``run_dir`` once they contain every needle.

    W&B's service writes the run file asynchronously: ``run.finish()`` may return before the
    last records are on disk, so this polls.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) <= 1, runs
        data = runs[0].read_bytes() if runs else b""
        if (runs and all(n in data for n in needles)) or time.monotonic() > deadline:
            return data
        time.sleep(0.1)
