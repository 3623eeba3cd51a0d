"""Recovery checkpoints of an RL run: written atomically, the last one kept, found again on restart.

Layout (``RUN_DIR/checkpoints``)::

    step7/                     the checkpoint after 7 completed steps (weight version 7)
      actor/  [critic/]        engine.save(...) of each trained engine (model, optimizer, LR, RNG)
      trainer_state.json       step, version, rollout controller state (data position + samples
                               in flight), dataset fingerprint, counters
      rng_rank0.pt             python / numpy / torch RNG of the trainer process (rank 0)
    .step8.tmp/                a checkpoint being written (ignored; removed by the next save)

Atomicity: everything is written into ``.step<n>.tmp`` and the directory is renamed to
``step<n>`` only when complete, so a kill at any moment leaves the previous checkpoint intact.
Older ``step<k>`` directories are deleted after the rename (``keep`` newest are kept).
Collective: :func:`save_checkpoint` is called on every trainer rank (engines save collectively);
only rank 0 writes the trainer state and renames.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

from areal_core.errors import ArealError

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng_rank0.pt"
_STEP_DIR = re.compile(r"^step(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the most steps, or None."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def recovery_point(run_dir: str | Path, recover: str) -> tuple[Path, dict[str, Any]] | None:
    """With ``recover == "auto"``: the newest checkpoint and its trainer state (rank 0's RNG
    restored), or None when there is none yet (logged) or recovery is off."""
    if recover != "auto":
        return None
    path = latest_checkpoint(run_dir)
    if path is None:
        from areal_core.logging import get_logger

        get_logger(__name__).info("recover=auto: no checkpoint yet, starting from step 0", run_dir=str(run_dir))
        return None
    return path, load_state(path)


def save_checkpoint(run_dir: str | Path, step: int, engines: dict[str, Any], state: dict[str, Any], *,
                    rank: int = 0, barrier=None, keep: int = 1) -> Path:
    """Write the checkpoint after ``step`` completed steps; returns its directory.

    ``engines``: name -> TrainEngine (each saved to ``<dir>/<name>`` collectively). ``state``:
    JSON-able trainer state (rank 0's is written). ``barrier``: called between phases when
    several ranks take part (e.g. ``torch.distributed.barrier``).
    """
    root = checkpoint_root(run_dir)
    final = root / f"step{step}"
    tmp = root / f".step{step}.tmp"
    sync = barrier or (lambda: None)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    sync()
    for name, engine in engines.items():
        engine.save(str(tmp / name))
    if rank == 0:
        _write_json(tmp / STATE_FILE, {**state, "step": step})
        _save_rng(tmp / RNG_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        old = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
        for _, path in old[:-keep] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)
    sync()
    return final


def load_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``path``; restores rank 0's RNG as a side effect."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArealError(f"recover: cannot read {path / STATE_FILE}: {exc}") from None
    if (path / RNG_FILE).is_file():
        _load_rng(path / RNG_FILE)
    return state


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        text = json.dumps(data, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArealError(f"checkpoint: the trainer state is not JSON data ({exc}); dataset rows must hold "
                         f"plain values (str, numbers, lists, dicts)") from None
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_rng(path: Path) -> None:
    import numpy as np
    import torch

    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}, path)


def _load_rng(path: Path) -> None:
    import numpy as np
    import torch

    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
