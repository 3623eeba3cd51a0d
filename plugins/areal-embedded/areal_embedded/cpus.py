"""Which cores an embedded server is pinned to (``inference.cpus``).

``cpus: [0, 2]`` names the cores. ``cpus: auto`` takes the first k cores of those the process may
run on (its affinity, so a restricted cpuset is respected), k = ``n_servers`` × ``threads`` (1
when ``threads`` is unset), and leaves the rest to the trainer. When the machine has no core to
spare (k ≥ the cores available), nothing is pinned. The server resolves ``auto`` on its own
machine (the flag travels as ``--cpus auto:K``); the trainer resolves it the same way on its
machine, which matters only when a server runs there (``trainer.torch_threads`` unset).
"""

from __future__ import annotations

import os

from areal_core.plugin import ArealError

AUTO = "auto"


def auto_cpus(count: int, affinity: set[int] | None = None) -> set[int] | None:
    """The first ``count`` cores of ``affinity`` (default: this process's), or None when fewer
    than ``count + 1`` cores are available (no core would be left for the trainer)."""
    allowed = sorted(os.sched_getaffinity(0) if affinity is None else affinity)
    return set(allowed[:count]) if len(allowed) > count else None


def parse_cpus(spec: str) -> set[int] | None:
    """The cores of a ``--cpus`` value: "0,2", or "auto:K" (:func:`auto_cpus`; None: no pinning)."""
    if spec.startswith(AUTO):
        _, _, count = spec.partition(":")
        try:
            return auto_cpus(int(count or 1))
        except ValueError:
            raise ArealError(f"--cpus {spec!r}: expected auto or auto:K with K a core count, e.g. auto:1") from None
    try:
        cpus = {int(c) for c in spec.split(",") if c.strip()}
    except ValueError:
        raise ArealError(f"--cpus {spec!r}: expected comma-separated CPU core ids, e.g. 0,1, or auto") from None
    if not cpus:
        raise ArealError(f"--cpus {spec!r}: no core given")
    return cpus
