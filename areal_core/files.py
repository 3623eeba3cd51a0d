"""Durable, space-checked file output: what checkpoints and weight exports are written with.

* :func:`require_free_space` before writing: an ArealError naming the path, the bytes needed and
  the bytes free, raised before anything is written (no partial file to clean up).
* :func:`disk_full_error` after a failed write: recognises a full disk or quota (``ENOSPC``,
  ``EDQUOT``, the wrapped forms safetensors raises, e.g. "os error 28", and torch's
  "PytorchStreamWriter failed writing file", which names no cause, when the file system has
  under 1 MiB left) and returns an ArealError naming the path and the size needed instead of a
  library traceback.
* :func:`fsync_tree`: every file and directory under a path reaches the disk (before the rename
  that publishes it, so a power loss cannot publish a directory of empty files).
* :func:`dir_size`: bytes under a path (what the next checkpoint will roughly need).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from areal_core.errors import ArealError

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXT = ("no space left on device", "os error 28", "errno 28", "disk quota exceeded")
LOW_SPACE_BYTES = 1 << 20  # below this much free space a failed write is taken as "disk full"


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def require_free_space(path: str | Path, needed: int, what: str) -> None:
    """ArealError unless the file system of ``path`` has ``needed`` bytes free."""
    free = free_bytes(path)
    if free < needed:
        raise ArealError(f"{what}: {path} needs about {human(needed)} free but its file system has {human(free)}; "
                         f"free space there or point fileroot elsewhere")


def dir_size(path: str | Path) -> int:
    """Total bytes of the regular files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def is_disk_full(exc: BaseException, path: str | Path) -> bool:
    """Whether ``exc`` (or one it wraps) says the disk or quota is full, or the write failed with
    less than :data:`LOW_SPACE_BYTES` left on ``path``'s file system."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if any(text in str(seen).lower() for text in _FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return isinstance(exc, (OSError, RuntimeError)) and free_bytes(path) < LOW_SPACE_BYTES
    except OSError:
        return False


def disk_full_error(exc: BaseException, path: str | Path, needed: int, what: str) -> ArealError | None:
    """An ArealError saying the disk is full (path, size needed, size free), or None when ``exc``
    is some other failure."""
    if not is_disk_full(exc, path):
        return None
    return ArealError(f"{what}: disk full writing {path} (needs about {human(needed)}, {human(free_bytes(path))} "
                      f"free); nothing was published and the partial files were removed. Free space or point "
                      f"fileroot elsewhere. ({type(exc).__name__}: {str(exc)[:200]})")


def fsync_tree(path: str | Path) -> None:
    """fsync every regular file under ``path``, then every directory (deepest first)."""
    dirs = []
    for root, _, files in os.walk(path):
        dirs.append(root)
        for name in files:
            _fsync(os.path.join(root, name), os.O_RDONLY)
    for root in reversed(dirs):
        _fsync(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def fsync_dir(path: str | Path) -> None:
    """fsync a directory (makes a rename inside it durable)."""
    _fsync(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
