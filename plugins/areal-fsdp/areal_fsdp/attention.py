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

Shapes (transformers' attention interface): query [1, H, T, D], key/value [1, H_kv, T, D]
(grouped-query attention when H_kv < H); returns ([1, T, H, D], None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "areal_varlen_sdpa"


def length_buckets(lengths: list[int]) -> list[list[int]]:
    """Document indices grouped by ⌈log₂ length⌉ (longest bucket first); empty documents dropped."""
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        if n > 0:
            buckets.setdefault((n - 1).bit_length(), []).append(i)
    return [buckets[b] for b in sorted(buckets, reverse=True)]


def bucket_layout(lengths: list[int], device: torch.device) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """For each bucket: (gather [n, L_max] token positions into the packed row (padding repeats the
    document's first token), valid [n, L_max] bool); and ``order`` [T]: for each packed position,
    its index in the concatenation of the buckets' valid outputs."""
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    layout, positions = [], []
    for docs in length_buckets(lengths):
        width = max(lengths[i] for i in docs)
        offsets = torch.arange(width)
        lens = torch.tensor([lengths[i] for i in docs])
        first = torch.tensor([starts[i] for i in docs])
        valid = offsets[None, :] < lens[:, None]
        gather = first[:, None] + torch.where(valid, offsets[None, :], 0)
        layout.append((gather.to(device), valid.to(device)))
        positions.append(gather[valid])
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
    gqa = key.shape[1] != query.shape[1]
    dropout = dropout if module.training else 0.0
    if len(lengths) == 1:
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True, scale=scaling,
                                             enable_gqa=gqa)
        return out.transpose(1, 2).contiguous(), None
    layout, order = bucket_layout(lengths, query.device)
    q, k, v = query[0], key[0], value[0]  # [H, T, D]
    outputs = []
    for gather, valid in layout:
        # [H, n, L, D] -> [n, H, L, D]
        qb, kb, vb = (x[:, gather].transpose(0, 1) for x in (q, k, v))
        ob = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout, is_causal=True, scale=scaling,
                                            enable_gqa=gqa)
        outputs.append(ob.transpose(1, 2)[valid])  # [n_valid, H, D]
    return torch.cat(outputs)[order][None], None


def register() -> str:
    """Make ``attn_implementation=NAME`` available to transformers models (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
