"""A micro-batch's sequences as the [b, s] token rows megatron's GPTModel takes.

megatron-core's local (non-Transformer-Engine) attention has no packed ``thd`` layout: it
refuses ``packed_seq_params`` and computes [b, heads, s, s] scores per row. Two layouts:

* **padded**: one sequence per row, right-padded to the longest (``L``); the model's own causal
  mask. Pads follow every real token, so no real token attends to one.
* **packed**: sequences first-fit into rows of capacity ``L`` (longest first), several per row,
  with a block-diagonal causal mask (``attention_mask`` [b, 1, L, L], True = masked) so a token
  attends only to earlier tokens of its own sequence. Never more rows than padded and never a
  longer row, so attention costs at most as much and the linear layers see fewer pad tokens.
  megatron's RoPE takes each row's positions 0..L-1 (it does not read ``position_ids``); a
  sequence starting at offset o gets positions o..o+n-1, and since RoPE attention scores depend
  only on the distance between query and key, its logits equal the padded layout's up to
  rounding.

:class:`Rows` records where each sequence sits (row, offset, length), in the micro-batch's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from areal_core.plugin import SequenceBatch


@dataclass
class Rows:
    """``ids`` [b, s] tokens; ``place`` [(row, offset, length)] per sequence of the micro-batch;
    ``mask`` [b, 1, s, s] bool (True = masked) or None for the model's causal mask."""

    ids: torch.Tensor
    place: list[tuple[int, int, int]]
    mask: torch.Tensor | None = None

    def positions(self) -> torch.Tensor:
        """[b, s] position of each token in its own sequence (pads continue their row's count)."""
        pos = torch.arange(self.ids.shape[1], device=self.ids.device).repeat(self.ids.shape[0], 1)
        for row, offset, length in self.place:
            if offset:
                pos[row, offset:offset + length] -= offset
        return pos

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """[b, s, ...] per-token outputs → [T, ...] in the micro-batch's packed token order."""
        return torch.cat([logits[r, o:o + n] for r, o, n in self.place])

    def padded_to(self, rows: int, length: int) -> Rows:
        """The same rows padded with token 0 to [rows, length] (a fixed shape for pipeline stages or
        expert-parallel ranks); padding tokens attend only among themselves."""
        ids = self.ids.new_zeros(rows, length)
        ids[:self.ids.shape[0], :self.ids.shape[1]] = self.ids
        mask = None
        if self.mask is not None:
            mask = _block_causal_mask(_segments(self.place, rows, length, ids.device))
        return Rows(ids, self.place, mask)


def build(batch: SequenceBatch, ix: tuple[int, ...], device: torch.device, pack: bool) -> Rows:
    """Sequences ``ix`` of ``batch`` as padded rows or (``pack``) packed rows."""
    seqs = [batch["input_ids"][batch.cu_seqlens[i]:batch.cu_seqlens[i + 1]] for i in ix]
    lengths = [len(s) for s in seqs]
    capacity = max(lengths)
    place: list[tuple[int, int, int]] = [(0, 0, 0)] * len(seqs)
    fill: list[int] = []  # tokens used per row
    for k in (sorted(range(len(seqs)), key=lambda k: -lengths[k]) if pack else range(len(seqs))):
        row = next((r for r, used in enumerate(fill) if used + lengths[k] <= capacity), None) if pack else None
        if row is None:
            row = len(fill)
            fill.append(0)
        place[k] = (row, fill[row], lengths[k])
        fill[row] += lengths[k]
    ids = torch.zeros(len(fill), capacity, dtype=torch.long)
    for (row, offset, length), seq in zip(place, seqs):
        ids[row, offset:offset + length] = seq
    ids = ids.to(device)
    shared = len(fill) < len(seqs)  # some row holds several sequences
    return Rows(ids, place, _block_causal_mask(_segments(place, ids.shape[0], ids.shape[1], device)) if shared else None)


def empty(device: torch.device) -> Rows:
    """One 1-token row of token 0: a micro-batch with no sequence (a replica still takes part in
    the collectives)."""
    return Rows(torch.zeros(1, 1, dtype=torch.long, device=device), [(0, 0, 1)])


def _segments(place: list[tuple[int, int, int]], rows: int, length: int, device: torch.device) -> torch.Tensor:
    """[rows, length] sequence number of each token; -1 for padding."""
    seg = torch.full((rows, length), -1, dtype=torch.long)
    for k, (row, offset, n) in enumerate(place):
        seg[row, offset:offset + n] = k
    return seg.to(device)


def _block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """[b, 1, s, s] True where query i must not see key j: j after i, or another sequence."""
    s = segments.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    return ~(same & causal)[:, None]
