"""The process group that carries new weights from trainer rank 0 to inference servers.

Both sides call :func:`open_weight_group` with the same address, port and world size: rank 0 (the
trainer) hosts the TCPStore, servers join as ranks 1..N. The store listens on that address only
(torch's own listener would take every interface): rank 0 binds the socket and hands it over. The group is a raw ``ProcessGroup``
(gloo on CPU, NCCL on GPU), independent of any default group either side already has, so the
trainer's own data-parallel groups are untouched. Tensors go one broadcast each, from rank 0,
in the order both sides agreed on over HTTP.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from areal_core.plugin import ArealError


def open_weight_group(master_address: str, master_port: int, world_size: int, rank: int,
                      backend: str = "gloo", timeout_s: float = 120.0) -> dist.ProcessGroupGloo | dist.ProcessGroupNCCL:
    """Join (rank 0: host) the weight-sync group; blocks until all ``world_size`` ranks joined."""
    if not 0 <= rank < world_size:
        raise ArealError(f"weight-sync rank {rank} is outside world_size {world_size}")
    timeout = datetime.timedelta(seconds=timeout_s)
    if rank == 0:
        store = dist.TCPStore(master_address, master_port, world_size, is_master=True, timeout=timeout,
                              master_listen_fd=_listen_fd(master_address, master_port))
    else:
        store = dist.TCPStore(master_address, master_port, world_size, is_master=False, timeout=timeout)
    group: dist.ProcessGroupGloo | dist.ProcessGroupNCCL
    if backend == "gloo":
        group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    elif backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(store, rank, world_size, options)
    else:
        raise ArealError(f"weight-sync backend {backend!r} is not one of 'gloo', 'nccl'")
    return group


def _listen_fd(address: str, port: int) -> int:
    """A listening socket on ``address:port`` only, as a file descriptor the store takes over."""
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    try:
        sock = socket.create_server((address, port), family=family, backlog=1024)
    except OSError as exc:
        raise ArealError(f"weight-sync store: cannot listen on {address}:{port}: {exc}") from None
    return sock.detach()


def broadcast_from_rank0(group: dist.ProcessGroup, tensors: list[torch.Tensor]) -> None:
    """Broadcast each tensor in place from rank 0 (rank 0 sends, every other rank receives)."""
    for tensor in tensors:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        opts.rootTensor = 0
        group.broadcast([tensor], opts).wait()


def iter_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
                 ) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group tensors, in order, into lists of at most ``bucket_bytes`` (a larger tensor goes alone)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor.detach()))
        size += nbytes
    if bucket:
        yield bucket


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the names SGLang's weight-update requests carry)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ArealError(f"unknown tensor dtype {name!r} in a weight update (expected e.g. 'float32', 'bfloat16')")
    return dtype
