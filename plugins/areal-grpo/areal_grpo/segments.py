"""Per-sequence reductions over a packed batch.

A packed batch holds B sequences end to end in 1-D token tensors of length T; ``seq_index`` [T]
says which sequence each token belongs to (``SequenceBatch.seq_index``). These helpers reduce a
token tensor to one value per sequence (or per group, with ``group_index`` [B] in place of
``seq_index``) and broadcast it back, without padding and without Python loops over sequences.
"""

from __future__ import annotations

import torch


def segment_sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """[n]: the sum of ``x`` [N] over the entries whose ``index`` [N] is i."""
    return x.new_zeros(n).index_add_(0, index, x)


def segment_count(mask: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """[n] float: how many entries of segment i have ``mask`` set."""
    return segment_sum(mask.float(), index, n)


def segment_mean(x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """[n]: the mean of ``x`` over the masked entries of each segment (0 for a segment with none).

    Unmasked entries are replaced by 0 (``torch.where``, not a product with the mask), so an inf
    there neither reaches the mean nor turns its gradient into NaN."""
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    return segment_sum(kept, index, n) / segment_count(mask, index, n).clamp(min=1)


def segment_max(x: torch.Tensor, index: torch.Tensor, n: int, empty: float = float("-inf")) -> torch.Tensor:
    """[n]: the max of ``x`` per segment (``empty`` for a segment with no entries)."""
    out = x.new_full((n,), empty)
    return out.scatter_reduce(0, index, x, reduce="amax", include_self=True)


def last_masked_position(mask: torch.Tensor, seq_index: torch.Tensor, n: int) -> torch.Tensor:
    """[n] long: the token position of each sequence's last masked token, -1 when it has none."""
    positions = torch.arange(mask.numel(), device=mask.device)
    marked = torch.where(mask.bool(), positions, torch.full_like(positions, -1))
    return segment_max(marked, seq_index, n, empty=-1)
