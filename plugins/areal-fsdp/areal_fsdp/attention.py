"""``areal_varlen_sdpa``: packed (varlen) attention from plain SDPA, documents batched by length.

A packed row holds documents back to back; each must attend causally to itself only. The
transformers ``sdpa`` path does this with a dense [T, T] block-diagonal mask, computing (and on
CPU spending most of its time on) every cross-document block: for the quickstart's 128 documents
of ~30 tokens in one 3.8k-token row that is ~60% of a train step. This function instead reads the
document boundaries ``cu_seq_lens_q`` (passed through the model's forward kwargs, as flash-attn's
varlen path takes them) and un-packs only q, k, v for attention:

* documents are grouped into buckets of similar length (same ⌈log₂ L⌉), so padding at most
  doubles a document's length;
* each bucket's documents are gathered into one right-padded [n, H, L_max, D] batch and run
  through a single causal SDPA call. With right padding and a causal mask a real query only
  sees keys at or before it, all real tokens of its own document, so no padding mask is needed
  and the real outputs are exact; padded positions are dropped and get zero gradient;
* the outputs are gathered back into packed order.

Attention then costs Σ_buckets n·L_max² ≤ 4·Σ L_i² instead of T², in a handful of SDPA calls
instead of one per document. The rest of the model (projections, MLP, head) stays on the packed
row, so no compute is spent on padding there. transformers builds no mask for an attention
function it does not know, so none is allocated.

**Context** (:mod:`areal_fsdp.prefix`): a document may also attend, in full, to a range of the
row outside itself: ``areal_context`` in the kwargs gives one ``(start, length)`` per document
(length 0: none). Such a document's keys are its context followed by itself, and query j sees
every context key and its own keys 0..j (an explicit mask; these documents are bucketed by
⌈log₂ L⌉ and ⌈log₂ (C + L)⌉). This is how the completions of one prompt share a single copy of it.

Shapes (transformers' attention interface): query [1, H, T, D], key/value [1, H_kv, T, D]
(grouped-query attention when H_kv < H); returns ([1, T, H, D], None).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

NAME = "areal_varlen_sdpa"
CONTEXT_KWARG = "areal_context"


class Bucket(NamedTuple):
    """Documents attended in one SDPA call. ``queries`` [n, L]: row positions of each document's
    tokens (padding repeats its first token), ``valid`` [n, L] bool; ``keys`` [n, K]: row
    positions of the keys (``queries`` itself without context); ``mask`` [n, 1, L, K] bool, or
    None for plain causal attention."""

    queries: torch.Tensor
    valid: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor | None


def length_buckets(lengths: list[int], contexts: list[int] | None = None) -> list[list[int]]:
    """Document indices grouped by ⌈log₂ length⌉ and, for documents with ``contexts[i]`` > 0
    context tokens, ⌈log₂ (context + length)⌉ (longest first); empty documents dropped."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, n in enumerate(lengths):
        c = contexts[i] if contexts else 0
        if n > 0:
            buckets.setdefault(((n - 1).bit_length(), (c + n - 1).bit_length() if c else -1), []).append(i)
    return [buckets[b] for b in sorted(buckets, reverse=True)]


def bucket_layout(lengths: list[int], device: torch.device,
                  contexts: list[tuple[int, int]] | None = None) -> tuple[list[Bucket], torch.Tensor]:
    """The buckets of documents ``lengths`` (each with its ``(start, length)`` context, if any),
    and ``order`` [T]: for each row position, its index in the concatenation of the buckets'
    valid outputs."""
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    ctx = contexts or [(0, 0)] * len(lengths)
    layout, positions = [], []
    for docs in length_buckets(lengths, [c for _, c in ctx]):
        width = max(lengths[i] for i in docs)
        offsets = torch.arange(width)
        lens = torch.tensor([lengths[i] for i in docs])
        first = torch.tensor([starts[i] for i in docs])
        valid = offsets[None, :] < lens[:, None]
        queries = first[:, None] + torch.where(valid, offsets[None, :], 0)
        keys, mask = queries, None
        if ctx[docs[0]][1]:  # a bucket's documents all have context or all have none
            c_start = torch.tensor([ctx[i][0] for i in docs])[:, None]
            c_len = torch.tensor([ctx[i][1] for i in docs])[:, None]
            k_offsets = torch.arange(int((c_len[:, 0] + lens).max()))[None, :]  # [1, K]
            own = k_offsets - c_len  # [n, K]: position inside the document, < 0 on its context
            in_context = own < 0
            in_doc = ~in_context & (own < lens[:, None])
            keys = torch.where(in_context, c_start + k_offsets, first[:, None] + own.clamp(min=0))
            keys = torch.where(in_context | in_doc, keys, first[:, None])  # padding: the first token
            sees_own = (own[:, None, :] >= 0) & (own[:, None, :] <= offsets[None, :, None])  # [n, L, K]
            mask = (in_context[:, None, :] | sees_own)[:, None].to(device)
        layout.append(Bucket(queries.to(device), valid.to(device), keys.to(device), mask))
        positions.append(queries[valid])
    order = torch.empty(starts[-1], dtype=torch.long)
    order[torch.cat(positions)] = torch.arange(starts[-1])
    return layout, order.to(device)


def varlen_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise NotImplementedError(f"{NAME} supports neither sliding-window attention nor logit softcapping; "
                                  f"set attn_implementation: sdpa (or eager)")
    if attention_mask is not None or query.shape[0] != 1:
        raise NotImplementedError(f"{NAME} takes one packed row without an attention mask")
    cu = kwargs.get("cu_seq_lens_q")
    lengths = (cu[1:] - cu[:-1]).tolist() if cu is not None else [query.shape[2]]
    contexts = kwargs.get(CONTEXT_KWARG)
    gqa = key.shape[1] != query.shape[1]
    dropout = dropout if module.training else 0.0
    if len(lengths) == 1:
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True, scale=scaling,
                                             enable_gqa=gqa)
        return out.transpose(1, 2).contiguous(), None
    layout, order = bucket_layout(lengths, query.device, contexts)
    q, k, v = query[0], key[0], value[0]  # [H, T, D]
    outputs = []
    for b in layout:
        # [H, n, L, D] -> [n, H, L, D]
        qb = q[:, b.queries].transpose(0, 1)
        kb, vb = (x[:, b.keys].transpose(0, 1) for x in (k, v))
        ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=b.mask, dropout_p=dropout, is_causal=b.mask is None,
                                            scale=scaling, enable_gqa=gqa)
        outputs.append(ob.transpose(1, 2)[b.valid])  # [n_valid, H, D]
    return torch.cat(outputs)[order][None], None


def register() -> str:
    """Make ``attn_implementation=NAME`` available to transformers models (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
