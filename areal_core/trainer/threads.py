"""How many torch CPU threads a trainer rank uses (``trainer.torch_threads``).

torch's default is one intra-op thread per physical core of the machine. When inference servers
of the same run are pinned to some of those cores (``inference.cpus`` of the embedded backend),
a trainer with that default runs one OpenMP thread on each server core too: every parallel
operator then waits at its barrier for a thread that shares its core with generation, and the
train step slows several-fold (docs/performance.md, "Trainer threads"). So when the config
leaves ``trainer.torch_threads`` unset and a backend on this machine reports pinned cores, the
trainer uses the cores it may run on (its affinity) minus those, at least one::

    threads = max(1, |affinity(trainer) \\ pinned(servers)|)

Synchronous runs (η = 0) keep torch's default: the servers generate only while the trainer waits
for the batch, so their cores are idle while it trains (the 2-core quickstart at η = 0, server
pinned to core 0: 0.68 s per step with two trainer threads against 0.85 s with one, back to back;
docs/performance.md). A set ``trainer.torch_threads`` is used as given; with no pinning (or
servers on other hosts) torch's default stays.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from areal_core.api.protocols import SupportsCpuPinning
from areal_core.logging import get_logger

log = get_logger(__name__)


def is_local_host(host: str) -> bool:
    """True when ``host`` (an address's host part) is this machine: loopback or this host's name."""
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_threads(affinity: set[int], pinned: frozenset[int] | None) -> int | None:
    """The trainer's thread count when none is configured: the cores of ``affinity`` not in
    ``pinned`` (at least 1), or None (keep torch's default) when nothing is pinned."""
    if not pinned:
        return None
    return max(1, len(affinity - pinned))


def apply_torch_threads(configured: int | None, backend: object, server_addrs: list[str],
                        synchronous: bool = False) -> int:
    """Set torch's intra-op thread count for this trainer rank; returns the count in effect.

    ``configured``: ``trainer.torch_threads``. ``backend``: the run's inference backend (its
    pinned cores count when it is :class:`SupportsCpuPinning` and a server runs on this machine).
    ``synchronous``: η = 0, no generation while training, so pinned server cores count as free.
    """
    import torch

    threads = configured
    if threads is None and not synchronous and isinstance(backend, SupportsCpuPinning):
        local = any(is_local_host(addr.rsplit(":", 1)[0]) for addr in server_addrs)
        if local:
            threads = default_threads(set(os.sched_getaffinity(0)), backend.pinned_cpus())
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    log.info("trainer torch threads", threads=torch.get_num_threads(),
             source="trainer.torch_threads" if configured is not None else
             ("cores not pinned to inference servers" if threads is not None else "torch default"))
    return torch.get_num_threads()
