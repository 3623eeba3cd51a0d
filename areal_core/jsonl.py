"""Reading and rewriting the run's JSON-lines files (``metrics.jsonl``, ``trained_samples.jsonl``).

A process killed mid-``write`` can leave a torn last line. :func:`read_rows` drops such a line
with a warning naming the file (it is the one row whose step runs again anyway); an unparsable
line anywhere else is real corruption and an ArealError naming the file and line number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from areal_core.errors import ArealError
from areal_core.logging import get_logger

log = get_logger(__name__)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every row of the JSONL file ``path`` (see the module docstring for a torn last line)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as exc:
            if all(not rest.strip() for rest in lines[number:]):
                log.warning("dropping a torn last line (the process writing it was interrupted)", file=str(path),
                            line=number, text=line[:80])
                break
            raise ArealError(f"{path}:{number} is not a JSON object ({exc}); the file is corrupt: repair or remove "
                             f"that line") from None
        rows.append(row)
    return rows


def keep_rows_through_step(path: str | Path, max_step: int) -> None:
    """Rewrite ``path`` keeping only rows whose ``step`` is ≤ ``max_step`` (atomically, durably)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [row for row in read_rows(path) if row.get("step", 0) <= max_step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in kept))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
