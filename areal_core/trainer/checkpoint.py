"""Recovery checkpoints of an RL run: written atomically and durably, the last K kept, found again on restart.

Layout (``RUN_DIR/checkpoints``)::

    step7/                     the checkpoint after 7 completed steps (weight version 7)
      actor/  [critic/]        engine.save(...) of each trained engine (model, optimizer, LR, RNG)
      trainer_state.json       step, version, rollout controller state (data position + samples
                               in flight), dataset fingerprint, counters
      rng_rank0.pt             python / numpy / torch RNG of the trainer process (rank 0)
      manifest.json            every file of the checkpoint with its size (written last)
    .step8.tmp/                a checkpoint being written (ignored; removed by the next save)

Atomicity: everything is written into ``.step<n>.tmp``, every file and directory in it is
fsync'd, and the directory is renamed to ``step<n>`` only then, so a kill or a power loss at any
moment leaves the previous checkpoint intact. Older ``step<k>`` directories are deleted after the
rename (the ``keep`` newest are kept, ``trainer.keep_checkpoints``, default 2).

Space: before writing, the file system must have room for about the size of the newest
checkpoint (plus 10%); a full disk during the write is reported as such (path, size needed),
and the partial ``.tmp`` directory is removed.

Finding one: :func:`latest_checkpoint` returns the newest checkpoint whose files all match its
manifest (present, same size) and whose trainer state parses; a newer unreadable one is skipped
with a warning naming what is wrong, so recovery falls back to the one before it.
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
from areal_core.files import (
    dir_size,
    disk_full_error,
    fsync_dir,
    fsync_tree,
    require_free_space,
)
from areal_core.logging import get_logger

log = get_logger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng_rank0.pt"
MANIFEST_FILE = "manifest.json"
DEFAULT_KEEP = 2
_STEP_DIR = re.compile(r"^step(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``step<n>`` directory, newest first (complete or not)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that :func:`check_checkpoint` accepts, or None. Skipped newer ones
    are logged with the reason."""
    for path in checkpoints(run_dir):
        problem = check_checkpoint(path)
        if problem is None:
            return path
        log.warning("checkpoint unreadable, falling back to an older one", checkpoint=str(path), problem=problem)
    return None


def check_checkpoint(path: Path) -> str | None:
    """None if the checkpoint at ``path`` looks whole, else what is wrong with it."""
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE}: {exc}"
    if not (path / MANIFEST_FILE).is_file():
        return None  # written before manifests existed: the state file is all there is to check
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{MANIFEST_FILE}: {exc}"
    for name, size in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
    return None


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
                    rank: int = 0, barrier=None, keep: int = DEFAULT_KEEP) -> Path:
    """Write the checkpoint after ``step`` completed steps; returns its directory.

    ``engines``: name -> TrainEngine (each saved to ``<dir>/<name>`` collectively). ``state``:
    JSON-able trainer state (rank 0's is written). ``barrier``: called between phases when
    several ranks take part (e.g. ``torch.distributed.barrier``). ``keep``: checkpoints kept.
    """
    root = checkpoint_root(run_dir)
    final = root / f"step{step}"
    tmp = root / f".step{step}.tmp"
    sync = barrier or (lambda: None)
    needed = 0
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        previous = checkpoints(run_dir)
        needed = int(dir_size(previous[0]) * 1.1) if previous else 0
        require_free_space(root, needed, f"checkpoint step{step}")
        tmp.mkdir()
    sync()
    try:
        for name, engine in engines.items():
            engine.save(str(tmp / name))
        if rank == 0:
            _write_json(tmp / STATE_FILE, {**state, "step": step})
            _save_rng(tmp / RNG_FILE)
            _write_json(tmp / MANIFEST_FILE, {"files": _file_sizes(tmp)})
            fsync_tree(tmp)
    except BaseException as exc:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(exc, tmp, needed, f"checkpoint step{step}") if isinstance(exc, Exception) else None
        if full is not None:
            raise full from None
        raise
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        for path in checkpoints(run_dir)[max(keep, 1):]:
            shutil.rmtree(path, ignore_errors=True)
    sync()
    return final


def _file_sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


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
