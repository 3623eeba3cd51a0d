"""SequenceBatch: B variable-length sequences packed end to end, without padding.

Token-level fields are 1-D tensors of length T = cu_seqlens[-1]; sequence-level fields have
length B. Sequence i occupies tokens ``cu_seqlens[i]:cu_seqlens[i+1]``.

Token fields produced by :meth:`from_trajectories`: ``input_ids`` (long), ``loss_mask`` (bool-like
float), ``logprobs`` (behaviour policy, float), ``versions`` (long, -1 on prompt). Sequence
fields: ``rewards`` (float), ``group_index`` (long: the i-th distinct group_id in the batch).
Algorithms add their own (``advantages``, ``prox_logprobs``, ``values``...).

``multimodal``: per sequence, the model inputs of its images (``Trajectory.multimodal_inputs``:
e.g. ``pixel_values``, ``image_grid_thw``; ``{}`` for a text sequence), or an empty list when no
sequence has any. :meth:`select`, :meth:`concat` and :meth:`to` keep it aligned with the sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from areal_core.api.types import Trajectory


@dataclass
class SequenceBatch:
    cu_seqlens: torch.Tensor  # [B+1] int64, starts at 0
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)  # each [T]
    seqs: dict[str, torch.Tensor] = field(default_factory=dict)  # each [B]
    multimodal: list[dict[str, torch.Tensor]] = field(default_factory=list)  # [] or B dicts

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return int(self.cu_seqlens[-1])

    @property
    def seqlens(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @property
    def position_ids(self) -> torch.Tensor:
        """[T]: 0..len-1 restarting at every sequence start."""
        starts = torch.repeat_interleave(self.cu_seqlens[:-1], self.seqlens)
        return torch.arange(self.num_tokens, device=self.cu_seqlens.device) - starts

    @property
    def seq_index(self) -> torch.Tensor:
        """[T]: which sequence each token belongs to."""
        return torch.repeat_interleave(torch.arange(self.num_seqs, device=self.cu_seqlens.device), self.seqlens)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tokens[key] if key in self.tokens else self.seqs[key]

    def select(self, indices: Sequence[int]) -> SequenceBatch:
        """The sub-batch of sequences ``indices`` (in that order), re-packed."""
        idx = [int(i) for i in indices]
        starts, lens = self.cu_seqlens[:-1], self.seqlens
        token_idx = torch.cat([torch.arange(int(starts[i]), int(starts[i] + lens[i])) for i in idx]) if idx else torch.zeros(0, dtype=torch.long)
        new_lens = lens[idx] if idx else torch.zeros(0, dtype=torch.long)
        cu = torch.zeros(len(idx) + 1, dtype=torch.long)
        cu[1:] = torch.cumsum(new_lens, 0)
        return SequenceBatch(
            cu_seqlens=cu,
            tokens={k: v[token_idx] for k, v in self.tokens.items()},
            seqs={k: v[idx] for k, v in self.seqs.items()},
            multimodal=[self.multimodal[i] for i in idx] if self.multimodal else [],
        )

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(
            self.cu_seqlens.to(device),
            {k: v.to(device) for k, v in self.tokens.items()},
            {k: v.to(device) for k, v in self.seqs.items()},
            [{k: v.to(device) for k, v in d.items()} for d in self.multimodal],
        )

    @classmethod
    def concat(cls, batches: Sequence[SequenceBatch]) -> SequenceBatch:
        lens = torch.cat([b.seqlens for b in batches])
        cu = torch.zeros(lens.numel() + 1, dtype=torch.long)
        cu[1:] = torch.cumsum(lens, 0)
        keys_t, keys_s = batches[0].tokens.keys(), batches[0].seqs.keys()
        return cls(
            cu,
            {k: torch.cat([b.tokens[k] for b in batches]) for k in keys_t},
            {k: torch.cat([b.seqs[k] for b in batches]) for k in keys_s},
            _concat_multimodal(batches),
        )

    @classmethod
    def from_trajectories(cls, trajs: Sequence[Trajectory]) -> SequenceBatch:
        lens = torch.tensor([len(t.input_ids) for t in trajs], dtype=torch.long)
        cu = torch.zeros(len(trajs) + 1, dtype=torch.long)
        cu[1:] = torch.cumsum(lens, 0)
        group_ids: dict[str, int] = {}
        for t in trajs:
            group_ids.setdefault(t.group_id or t.sample_id or str(id(t)), len(group_ids))
        return cls(
            cu_seqlens=cu,
            tokens={
                "input_ids": torch.tensor([i for t in trajs for i in t.input_ids], dtype=torch.long),
                "loss_mask": torch.tensor([m for t in trajs for m in t.loss_mask], dtype=torch.float32),
                "logprobs": torch.tensor([lp for t in trajs for lp in t.logprobs], dtype=torch.float32),
                "versions": torch.tensor([v for t in trajs for v in t.versions], dtype=torch.long),
            },
            seqs={
                "rewards": torch.tensor([t.reward for t in trajs], dtype=torch.float32),
                "group_index": torch.tensor(
                    [group_ids[t.group_id or t.sample_id or str(id(t))] for t in trajs], dtype=torch.long
                ),
            },
            multimodal=[dict(t.multimodal_inputs) for t in trajs] if any(t.multimodal_inputs for t in trajs) else [],
        )


def _concat_multimodal(batches: Sequence[SequenceBatch]) -> list[dict[str, torch.Tensor]]:
    if not any(b.multimodal for b in batches):
        return []
    return [d for b in batches for d in (b.multimodal or [{} for _ in range(b.num_seqs)])]
