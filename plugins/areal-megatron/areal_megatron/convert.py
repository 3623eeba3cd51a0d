"""Hugging Face ↔ megatron-core weight names and layouts for Qwen2, Qwen3 and Llama decoders.

Both directions work on *full* (unsharded) tensors; :mod:`areal_megatron.sharding` splits and
gathers them over tensor-parallel ranks. Per decoder layer i (``L.`` = ``model.layers.{i}.`` in
HF, ``decoder.layers.{i}.`` in megatron):

================================== ====================================================== ==========================
HF                                 megatron, local spec                                   Transformer-Engine spec
================================== ====================================================== ==========================
L.input_layernorm.weight           L.input_layernorm.weight                               L.self_attention.linear_qkv.layer_norm_weight
L.self_attn.{q,k,v}_proj.weight    L.self_attention.linear_qkv.weight (fused, see below)  same
L.self_attn.{q,k,v}_proj.bias      L.self_attention.linear_qkv.bias (Qwen2)               same
L.self_attn.{q,k}_norm.weight      L.self_attention.{q,k}_layernorm.weight (Qwen3)        same
L.self_attn.o_proj.weight          L.self_attention.linear_proj.weight                    same
L.post_attention_layernorm.weight  L.pre_mlp_layernorm.weight                             L.mlp.linear_fc1.layer_norm_weight
L.mlp.{gate,up}_proj.weight        L.mlp.linear_fc1.weight = [gate; up]                   same
L.mlp.down_proj.weight             L.mlp.linear_fc2.weight                                same
================================== ====================================================== ==========================

plus ``model.embed_tokens.weight`` ↔ ``embedding.word_embeddings.weight``, ``model.norm.weight``
↔ ``decoder.final_layernorm.weight`` and, untied only, ``lm_head.weight`` ↔ ``output_layer.weight``.

Fused QKV: with G query groups (key/value heads), H/G query heads per group and head size d,
``linear_qkv`` holds G blocks of ``[q (H/G·d rows); k (d rows); v (d rows)]``, group after group,
so a contiguous split over tensor-parallel ranks gives each rank whole groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from areal_core.plugin import ArealError

SUPPORTED = ("qwen2", "qwen3", "llama")
_LAYER_NORM_NAMES = {
    "local": ("input_layernorm.weight", "pre_mlp_layernorm.weight"),
    "te": ("self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight"),
}


@dataclass(frozen=True)
class Layout:
    """What the conversion needs of an HF config."""

    num_layers: int
    num_heads: int
    num_groups: int
    head_dim: int
    qkv_bias: bool
    qk_norm: bool
    tied: bool
    spec: str = "local"  # "local" or "te": megatron's layer-spec naming

    @classmethod
    def of(cls, hf_config, spec: str = "local") -> Layout:
        model_type = getattr(hf_config, "model_type", "?")
        if model_type not in SUPPORTED:
            raise ArealError(f"train engine 'megatron': model_type {model_type!r} has no weight conversion "
                             f"(supported: {', '.join(SUPPORTED)})")
        heads = hf_config.num_attention_heads
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
        return cls(num_layers=hf_config.num_hidden_layers, num_heads=heads,
                   num_groups=getattr(hf_config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   qkv_bias=model_type == "qwen2" or bool(getattr(hf_config, "attention_bias", False)),
                   qk_norm=model_type == "qwen3", tied=bool(hf_config.tie_word_embeddings), spec=spec)


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lay: Layout) -> torch.Tensor:
    """[H·d | G·d | G·d, ...] → G blocks of [q; k; v] (works for weights and biases)."""
    g, d = lay.num_groups, lay.head_dim
    rest = q.shape[1:]
    q = q.reshape(g, lay.num_heads // g * d, *rest)
    return torch.cat([q, k.reshape(g, d, *rest), v.reshape(g, d, *rest)], dim=1).reshape(-1, *rest)


def _split_qkv(qkv: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g, d = lay.num_groups, lay.head_dim
    per_group = lay.num_heads // g * d
    rest = qkv.shape[1:]
    blocks = qkv.reshape(g, per_group + 2 * d, *rest)
    q, k, v = blocks.split([per_group, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def hf_to_megatron(hf: dict[str, torch.Tensor], lay: Layout) -> dict[str, torch.Tensor]:
    """Full megatron state (global layer numbers) from a full HF causal-LM state dict."""
    norm_in, norm_mlp = _LAYER_NORM_NAMES[lay.spec]
    out = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    if not lay.tied:
        out["output_layer.weight"] = hf["lm_head.weight"]
    for i in range(lay.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = h + "self_attn."
        out[m + norm_in] = hf[h + "input_layernorm.weight"]
        out[m + "self_attention.linear_qkv.weight"] = _fuse_qkv(
            hf[att + "q_proj.weight"], hf[att + "k_proj.weight"], hf[att + "v_proj.weight"], lay)
        if lay.qkv_bias:
            out[m + "self_attention.linear_qkv.bias"] = _fuse_qkv(
                hf[att + "q_proj.bias"], hf[att + "k_proj.bias"], hf[att + "v_proj.bias"], lay)
        if lay.qk_norm:
            out[m + "self_attention.q_layernorm.weight"] = hf[att + "q_norm.weight"]
            out[m + "self_attention.k_layernorm.weight"] = hf[att + "k_norm.weight"]
        out[m + "self_attention.linear_proj.weight"] = hf[att + "o_proj.weight"]
        out[m + norm_mlp] = hf[h + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([hf[h + "mlp.gate_proj.weight"], hf[h + "mlp.up_proj.weight"]])
        out[m + "mlp.linear_fc2.weight"] = hf[h + "mlp.down_proj.weight"]
    unused = set(hf) - _hf_names(lay)
    if unused:
        raise ArealError(f"train engine 'megatron': HF weights with no megatron counterpart: {sorted(unused)[:5]}")
    return out


def megatron_to_hf(state: dict[str, torch.Tensor], lay: Layout) -> Iterator[tuple[str, torch.Tensor]]:
    """HF names and tensors from a full megatron state (the inverse of :func:`hf_to_megatron`)."""
    norm_in, norm_mlp = _LAYER_NORM_NAMES[lay.spec]
    yield "model.embed_tokens.weight", state["embedding.word_embeddings.weight"]
    for i in range(lay.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = h + "self_attn."
        yield h + "input_layernorm.weight", state[m + norm_in]
        for part, tensor in zip("qkv", _split_qkv(state[m + "self_attention.linear_qkv.weight"], lay)):
            yield f"{att}{part}_proj.weight", tensor
        if lay.qkv_bias:
            for part, tensor in zip("qkv", _split_qkv(state[m + "self_attention.linear_qkv.bias"], lay)):
                yield f"{att}{part}_proj.bias", tensor
        if lay.qk_norm:
            yield att + "q_norm.weight", state[m + "self_attention.q_layernorm.weight"]
            yield att + "k_norm.weight", state[m + "self_attention.k_layernorm.weight"]
        yield att + "o_proj.weight", state[m + "self_attention.linear_proj.weight"]
        yield h + "post_attention_layernorm.weight", state[m + norm_mlp]
        gate, up = state[m + "mlp.linear_fc1.weight"].chunk(2)
        yield h + "mlp.gate_proj.weight", gate
        yield h + "mlp.up_proj.weight", up
        yield h + "mlp.down_proj.weight", state[m + "mlp.linear_fc2.weight"]
    yield "model.norm.weight", state["decoder.final_layernorm.weight"]
    if not lay.tied:
        yield "lm_head.weight", state["output_layer.weight"]


def _hf_names(lay: Layout) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}  # lm_head: tied copies may be saved
    for i in range(lay.num_layers):
        h = f"model.layers.{i}."
        names |= {h + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                                  "mlp.up_proj.weight", "mlp.down_proj.weight", "self_attn.o_proj.weight")}
        names |= {f"{h}self_attn.{p}_proj.weight" for p in "qkv"}
        if lay.qkv_bias:
            names |= {f"{h}self_attn.{p}_proj.bias" for p in "qkv"}
        if lay.qk_norm:
            names |= {h + "self_attn.q_norm.weight", h + "self_attn.k_norm.weight"}
    return names
