"""Micro-batch planning: split a packed batch over data-parallel ranks, then into token budgets.

Every trainer rank receives the same global batch and computes the same plan from the sequence
lengths alone (the plan is a pure, deterministic function of ``seqlens``), so all ranks agree on
it without communicating. Two steps:

1. **DP balancing** (longest-processing-time greedy): sequences sorted by length, longest first,
   each given to the rank with the fewest tokens so far (ties: lowest rank). The heaviest rank
   carries at most ``total/R + max_len`` tokens.
2. **Bin packing** (first-fit-decreasing) of each rank's sequences into micro-batches of at most
   ``max_tokens`` tokens. A sequence longer than the budget gets a micro-batch of its own.

All ranks must run the same number of forward/backward passes (FSDP gathers parameters
collectively in each), so every rank's plan is brought to the same count M = the largest rank's
bin count: a rank with fewer bins splits its fullest multi-sequence bin (FFD over two halves)
until it has M; if only single-sequence bins are left, it pads with empty micro-batches, which the
engine runs as a zero-weight dummy pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from areal_core.errors import ArealError


@dataclass(frozen=True)
class MicroBatchPlan:
    """``ranks[r][m]``: indices (into the global batch) of the sequences of rank r's micro-batch m.

    Every ``ranks[r]`` has the same length :attr:`num_micro_batches`; an entry may be empty.
    """

    ranks: tuple[tuple[tuple[int, ...], ...], ...]
    seqlens: tuple[int, ...]
    max_tokens: int

    @property
    def num_micro_batches(self) -> int:
        return len(self.ranks[0])

    def tokens(self, rank: int) -> list[int]:
        """Token count of each of ``rank``'s micro-batches."""
        return [sum(self.seqlens[i] for i in mb) for mb in self.ranks[rank]]

    def rank_tokens(self) -> list[int]:
        """Total tokens per rank."""
        return [sum(self.tokens(r)) for r in range(len(self.ranks))]


def balance_over_ranks(seqlens: Sequence[int], n_ranks: int) -> list[list[int]]:
    """Assign sequence indices to ``n_ranks`` ranks, balancing token counts (LPT greedy).

    Returns per-rank index lists, each in ascending index order. Deterministic.
    """
    if n_ranks < 1:
        raise ArealError(f"n_ranks must be >= 1, got {n_ranks}")
    order = sorted(range(len(seqlens)), key=lambda i: (-seqlens[i], i))
    load = [0] * n_ranks
    assigned: list[list[int]] = [[] for _ in range(n_ranks)]
    for i in order:
        r = min(range(n_ranks), key=lambda k: (load[k], len(assigned[k]), k))
        assigned[r].append(i)
        load[r] += seqlens[i]
    return [sorted(a) for a in assigned]


def first_fit_decreasing(indices: Sequence[int], seqlens: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Pack ``indices`` into bins of at most ``max_tokens`` tokens (oversized sequences alone).

    Bins come out in creation order (the first holds the longest sequence); sequences inside a
    bin keep ascending index order.
    """
    order = sorted(indices, key=lambda i: (-seqlens[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = seqlens[i]
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_tokens - n)
    return [sorted(b) for b in bins]


def _split_to_count(bins: list[list[int]], seqlens: Sequence[int], count: int) -> list[list[int]]:
    """Split multi-sequence bins (fullest first) until there are ``count`` bins, else pad with []."""
    bins = [list(b) for b in bins]
    while len(bins) < count:
        splittable = [b for b in range(len(bins)) if len(bins[b]) > 1]
        if not splittable:
            bins.append([])
            continue
        b = max(splittable, key=lambda k: (sum(seqlens[i] for i in bins[k]), -k))
        halves = balance_over_ranks([seqlens[i] for i in bins[b]], 2)
        first, second = ([bins[b][j] for j in h] for h in halves)
        bins[b] = first
        bins.insert(b + 1, second)
    return bins


def plan_micro_batches(seqlens: Sequence[int], max_tokens: int, n_ranks: int = 1,
                       min_micro_batches: int = 1) -> MicroBatchPlan:
    """Plan the micro-batches of every rank for a batch with sequence lengths ``seqlens``.

    ``max_tokens``: token budget per micro-batch (a longer sequence still gets one of its own).
    ``min_micro_batches``: at least this many micro-batches per rank (e.g. to bound memory when
    the budget is generous). Raises ArealError on a non-positive budget or length.
    """
    lens = [int(n) for n in seqlens]
    if max_tokens < 1:
        raise ArealError(f"max_tokens_per_mb must be >= 1, got {max_tokens}")
    bad = [n for n in lens if n < 1]
    if bad:
        raise ArealError(f"every sequence needs at least one token; got lengths {bad[:5]}")
    per_rank = balance_over_ranks(lens, n_ranks)
    bins = [first_fit_decreasing(idx, lens, max_tokens) for idx in per_rank]
    count = max([min_micro_batches] + [len(b) for b in bins])
    bins = [_split_to_count(b, lens, count) for b in bins]
    return MicroBatchPlan(
        ranks=tuple(tuple(tuple(mb) for mb in rank_bins) for rank_bins in bins),
        seqlens=tuple(lens),
        max_tokens=max_tokens,
    )
