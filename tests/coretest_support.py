"""Helpers for the core tests (a module of its own: every package's tests have a conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


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
