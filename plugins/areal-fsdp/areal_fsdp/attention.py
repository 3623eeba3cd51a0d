"""``areal_varlen_sdpa``: packed (varlen) attention from plain SDPA, one document at a time.

A packed row holds documents back to back; each must attend causally to itself only. The
transformers ``sdpa`` path does this with a dense [T, T] block-diagonal mask, computing (and on
CPU spending most of its attention time on) every cross-document block. This function instead
splits q, k, v at the boundaries ``cu_seq_lens_q`` (passed through the model's forward kwargs,
as flash-attn's varlen path takes them) and runs causal SDPA per document, so attention costs
Σ L_i² instead of T². transformers builds no mask for an attention function it does not know,
so none is allocated.

Shapes (transformers' attention interface): query [1, H, T, D], key/value [1, H_kv, T, D]
(grouped-query attention when H_kv < H); returns ([1, T, H, D], None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "areal_varlen_sdpa"


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
    # split (not slicing): its backward is one cat, where each slice's would write a full-size zero tensor
    outputs = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``attn_implementation=NAME`` available to transformers models (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
