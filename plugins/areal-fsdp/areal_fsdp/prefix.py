"""Shared-prefix packing: the n completions of one prompt keep a single copy of it in a packed row.

A GRPO batch holds n sequences per prompt. Packed as they are, a micro-batch repeats each prompt
n times, and with short completions most of the trainer's forward and backward goes to the
copies (the quickstart: ~25 prompt tokens and ~3 completion tokens per sequence, so ~85% of
them). Here the sequences of one group (the same ``group_index``) whose first P tokens agree are
laid out as one tree::

    [ prefix: P tokens | suffix of sequence 1 | suffix of sequence 2 | ... ]

The positions are 0..P-1 on the prefix and P..L_i-1 on suffix i. The prefix is a causal document
of its own. Each suffix is a document that attends causally to itself and fully to the prefix, its
*context*, which :mod:`areal_fsdp.attention` reads from the ``areal_context`` kwarg. Every token
so sees exactly what it sees in its own sequence, at the same positions, so its hidden state and
logits are the unshared ones (up to float summation order). In backward the prefix receives the
sum of the gradients its n copies would have received. Per-token outputs are gathered back into
the micro-batch's original packed layout (:attr:`SharedPrefixRow.gather`), so losses and their
normalisation see no difference.

The logprob of a row token comes from the logits at its *parent* row: the row before it, except
for the first token of a suffix, whose parent is the last prefix token (shared by the n suffixes).
P is capped at the shortest member's length − 1, so every suffix has at least one token.

The trainer shares only within a micro-batch: :func:`sharing_units` gives the groups that must stay
together when micro-batches are planned (cut where one would exceed the token budget), and their
sizes in row tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from areal_core.plugin import SequenceBatch


@dataclass(frozen=True)
class SharedPrefixRow:
    """One packed row in tree layout. T' row tokens; T tokens in the original micro-batch."""

    input_ids: torch.Tensor  # [T'] long
    position_ids: torch.Tensor  # [T'] long
    doc_lens: list[int]  # the row's documents in order; they sum to T'
    contexts: list[tuple[int, int]]  # per document: (start, length) of the row range it also attends to
    parents: torch.Tensor  # [T'] long: the row whose logits predict this token; -1 where none does (a tree's first token)
    gather: torch.Tensor  # [T] long: the row of each token of the original micro-batch

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """[D+1] int32 document boundaries (what the attention's ``cu_seq_lens_q`` takes)."""
        return torch.tensor([0] + self.doc_lens, dtype=torch.long).cumsum(0).to(torch.int32)

    def to(self, device) -> SharedPrefixRow:
        return SharedPrefixRow(self.input_ids.to(device), self.position_ids.to(device), self.doc_lens, self.contexts,
                               self.parents.to(device), self.gather.to(device))


def shared_prefixes(batch: SequenceBatch) -> list[tuple[list[int], int]]:
    """Groups of sequences and the length P ≥ 1 of the prefix they share, in order of their first
    member; a sequence with no group, or whose group shares nothing, is a group of its own (P 0)."""
    if "group_index" not in batch.seqs:
        return [([i], 0) for i in range(batch.num_seqs)]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(batch["group_index"].tolist()):
        members.setdefault(g, []).append(i)
    ids, cu = batch["input_ids"].cpu(), batch.cu_seqlens.tolist()
    groups: list[tuple[list[int], int]] = []
    for seqs in members.values():
        shared = min(cu[i + 1] - cu[i] for i in seqs) - 1
        first = ids[cu[seqs[0]]:cu[seqs[0]] + shared]
        for i in seqs[1:]:
            if shared == 0:
                break
            differ = (ids[cu[i]:cu[i] + shared] != first[:shared]).nonzero()
            shared = int(differ[0]) if differ.numel() else shared
        if len(seqs) > 1 and shared > 0:
            groups.append((seqs, shared))
        else:
            groups.extend(([i], 0) for i in seqs)
    return groups


def sharing_units(batch: SequenceBatch, max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """(sequence indices of each unit, its size in row tokens): the groups of
    :func:`shared_prefixes`, to be planned into micro-batches whole. A group whose tree would
    exceed ``max_tokens`` is cut, in order, into units that each fit (each keeps its own copy of
    the prefix), so sharing never makes a micro-batch larger than unshared packing would."""
    lens = batch.seqlens.tolist()
    units: list[list[int]] = []
    sizes: list[int] = []
    for seqs, shared in shared_prefixes(batch):
        unit: list[int] = []
        size = 0
        for i in seqs:
            if unit and size + lens[i] - shared > max_tokens:
                units.append(unit)
                sizes.append(size)
                unit, size = [], 0
            size += lens[i] - shared if unit else lens[i]
            unit.append(i)
        units.append(unit)
        sizes.append(size)
    return units, sizes


def tree_row(batch: SequenceBatch) -> SharedPrefixRow | None:
    """The tree layout of micro-batch ``batch`` (on the CPU), or None when no two sequences share a prefix."""
    groups = shared_prefixes(batch)
    if all(p == 0 for _, p in groups):
        return None
    ids, cu = batch["input_ids"].cpu(), batch.cu_seqlens.tolist()
    pieces: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    parents: list[torch.Tensor] = []
    doc_lens: list[int] = []
    contexts: list[tuple[int, int]] = []
    gather = torch.empty(batch.num_tokens, dtype=torch.long)
    row = 0

    def add(start: int, length: int, first_position: int, parent: int, context: tuple[int, int]) -> int:
        """Append tokens ``start..start+length-1`` of the batch as a document at the row's end."""
        nonlocal row
        pieces.append(ids[start:start + length])
        positions.append(torch.arange(first_position, first_position + length))
        parents.append(torch.cat([torch.tensor([parent]), torch.arange(row, row + length - 1)]))
        doc_lens.append(length)
        contexts.append(context)
        row += length
        return row - length

    for seqs, shared in groups:
        if shared == 0:
            (i,) = seqs
            at = add(cu[i], cu[i + 1] - cu[i], 0, -1, (0, 0))
            gather[cu[i]:cu[i + 1]] = torch.arange(at, at + cu[i + 1] - cu[i])
            continue
        prefix = add(cu[seqs[0]], shared, 0, -1, (0, 0))
        for i in seqs:
            gather[cu[i]:cu[i] + shared] = torch.arange(prefix, prefix + shared)
            length = cu[i + 1] - cu[i] - shared
            at = add(cu[i] + shared, length, shared, prefix + shared - 1, (prefix, shared))
            gather[cu[i] + shared:cu[i + 1]] = torch.arange(at, at + length)
    return SharedPrefixRow(torch.cat(pieces), torch.cat(positions), doc_lens, contexts, torch.cat(parents), gather)
