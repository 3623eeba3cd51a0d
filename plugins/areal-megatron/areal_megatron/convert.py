"""Hugging Face ↔ megatron-core weight names and layouts for Qwen2, Qwen3, Llama and the
Qwen2-MoE / Qwen3-MoE mixture-of-experts decoders.

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

A mixture-of-experts layer (``L.mlp`` is a sparse block; HF names are the saved files' names,
one tensor per expert, see :class:`areal_core.plugin.CheckpointLayout`) maps as

========================================== ===================================================
HF (files)                                 megatron (local and TE spec, no grouped GEMM)
========================================== ===================================================
L.post_attention_layernorm.weight          L.pre_mlp_layernorm.weight (both specs)
L.mlp.gate.weight [E, H]                   L.mlp.router.weight
L.mlp.experts.{e}.{gate,up}_proj.weight    L.mlp.experts.local_experts.{e}.linear_fc1.weight = [gate; up]
L.mlp.experts.{e}.down_proj.weight         L.mlp.experts.local_experts.{e}.linear_fc2.weight
L.mlp.shared_expert.{gate,up}_proj.weight  L.mlp.shared_experts.linear_fc1.weight = [gate; up] (Qwen2-MoE)
L.mlp.shared_expert.down_proj.weight       L.mlp.shared_experts.linear_fc2.weight
L.mlp.shared_expert_gate.weight [1, H]     L.mlp.shared_experts.gate_weight
========================================== ===================================================

with global expert numbers e (:mod:`areal_megatron.sharding` renumbers them per expert-parallel
rank). Routing is the same function in both: HF takes softmax over all E router logits, keeps
the top k and (``norm_topk_prob``) renormalises them, which equals megatron's top k of the
logits followed by a softmax over those k (``moe_router_pre_softmax=False``); without
renormalisation megatron's ``moe_router_pre_softmax=True`` is HF's order exactly.

plus ``model.embed_tokens.weight`` ↔ ``embedding.word_embeddings.weight``, ``model.norm.weight``
↔ ``decoder.final_layernorm.weight`` and, untied only, ``lm_head.weight`` ↔ ``output_layer.weight``.

Fused QKV: with G query groups (key/value heads), H/G query heads per group and head size d,
``linear_qkv`` holds G blocks of ``[q (H/G·d rows); k (d rows); v (d rows)]``, group after group,
so a contiguous split over tensor-parallel ranks gives each rank whole groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from areal_core.plugin import ArealError

SUPPORTED = ("qwen2", "qwen3", "llama", "qwen2_moe", "qwen3_moe")
_LAYER_NORM_NAMES = {
    "local": ("input_layernorm.weight", "pre_mlp_layernorm.weight"),
    "te": ("self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight"),
}
_MOE_NORM = "pre_mlp_layernorm.weight"  # an MoE layer's pre-MLP norm is its own module in both specs
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


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
    moe_layers: tuple[bool, ...] = ()  # per layer: whether its MLP is a mixture of experts (empty: dense model)
    num_experts: int = 0
    shared_expert: bool = False  # Qwen2-MoE: a shared expert with a sigmoid gate beside the routed ones

    @classmethod
    def of(cls, hf_config, spec: str = "local") -> Layout:
        model_type = getattr(hf_config, "model_type", "?")
        if model_type not in SUPPORTED:
            raise ArealError(f"train engine 'megatron': model_type {model_type!r} has no weight conversion "
                             f"(supported: {', '.join(SUPPORTED)})")
        heads = hf_config.num_attention_heads
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
        layers = hf_config.num_hidden_layers
        experts: int = 0
        moe_layers: tuple[bool, ...] = ()
        shared = False
        if model_type.endswith("_moe"):
            experts = int(getattr(hf_config, "num_experts", None) or getattr(hf_config, "num_local_experts", None) or 0)
            skip, step = set(getattr(hf_config, "mlp_only_layers", None) or ()), hf_config.decoder_sparse_step
            moe_layers = tuple(i not in skip and experts > 0 and (i + 1) % step == 0 for i in range(layers))
            shared = bool(getattr(hf_config, "shared_expert_intermediate_size", 0))
        return cls(num_layers=layers, num_heads=heads,
                   num_groups=getattr(hf_config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   qkv_bias=model_type.startswith("qwen2") or bool(getattr(hf_config, "attention_bias", False)),
                   qk_norm=model_type.startswith("qwen3"), tied=bool(hf_config.tie_word_embeddings), spec=spec,
                   moe_layers=moe_layers, num_experts=experts, shared_expert=shared)

    def is_moe(self, layer: int) -> bool:
        return bool(self.moe_layers) and self.moe_layers[layer]

    def mlp_norm(self, layer: int) -> str:
        """The megatron name (within the layer) of layer ``layer``'s pre-MLP norm."""
        return _MOE_NORM if self.is_moe(layer) else _LAYER_NORM_NAMES[self.spec][1]


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


def _mlp_pairs(lay: Layout, layer: int) -> list[tuple[str, str]]:
    """(megatron MLP, HF MLP) name stems of one layer: each megatron ``linear_fc1``/``linear_fc2``
    pair corresponds to HF's ``gate_proj``+``up_proj`` / ``down_proj`` under the HF stem."""
    if not lay.is_moe(layer):
        return [("mlp.", "mlp.")]
    pairs = [(f"mlp.experts.local_experts.{e}.", f"mlp.experts.{e}.") for e in range(lay.num_experts)]
    if lay.shared_expert:
        pairs.append(("mlp.shared_experts.", "mlp.shared_expert."))
    return pairs


def _moe_singles(lay: Layout, layer: int) -> list[tuple[str, str]]:
    """(megatron, HF) names within a layer of the MoE tensors that map one to one."""
    if not lay.is_moe(layer):
        return []
    out = [("mlp.router.weight", "mlp.gate.weight")]
    if lay.shared_expert:
        out.append(("mlp.shared_experts.gate_weight", "mlp.shared_expert_gate.weight"))
    return out


def hf_to_megatron(hf: dict[str, torch.Tensor], lay: Layout) -> dict[str, torch.Tensor]:
    """Full megatron state (global layer and expert numbers) from a full HF causal-LM state dict."""
    norm_in = _LAYER_NORM_NAMES[lay.spec][0]
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
        out[m + lay.mlp_norm(i)] = hf[h + "post_attention_layernorm.weight"]
        for meg, hf_stem in _mlp_pairs(lay, i):
            out[m + meg + "linear_fc1.weight"] = torch.cat([hf[h + hf_stem + "gate_proj.weight"],
                                                            hf[h + hf_stem + "up_proj.weight"]])
            out[m + meg + "linear_fc2.weight"] = hf[h + hf_stem + "down_proj.weight"]
        for meg, hf_name in _moe_singles(lay, i):
            out[m + meg] = hf[h + hf_name]
    unused = set(hf) - _hf_names(lay)
    if unused:
        raise ArealError(f"train engine 'megatron': HF weights with no megatron counterpart: {sorted(unused)[:5]}")
    return out


def to_hf(name: str, tensor: torch.Tensor, lay: Layout) -> list[tuple[str, torch.Tensor]]:
    """The HF (name, tensor) pairs of one full megatron tensor under its global name (the inverse
    of :func:`hf_to_megatron`, one tensor at a time: what lets weights stream)."""
    if name == "embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", tensor)]
    if name == "decoder.final_layernorm.weight":
        return [("model.norm.weight", tensor)]
    if name == "output_layer.weight":
        return [] if lay.tied else [("lm_head.weight", tensor)]
    match = _LAYER.match(name)
    if match is None:
        raise ArealError(f"train engine 'megatron': no HF name for megatron weight {name!r}")
    i, rest = int(match.group(1)), match.group(2)
    h = f"model.layers.{i}."
    att = h + "self_attn."
    if rest == _LAYER_NORM_NAMES[lay.spec][0]:
        return [(h + "input_layernorm.weight", tensor)]
    if rest == lay.mlp_norm(i):
        return [(h + "post_attention_layernorm.weight", tensor)]
    if rest in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
        kind = rest.rsplit(".", 1)[1]
        return [(f"{att}{part}_proj.{kind}", t) for part, t in zip("qkv", _split_qkv(tensor, lay))]
    simple = {"self_attention.q_layernorm.weight": att + "q_norm.weight",
              "self_attention.k_layernorm.weight": att + "k_norm.weight",
              "self_attention.linear_proj.weight": att + "o_proj.weight",
              **{meg: h + hf_name for meg, hf_name in _moe_singles(lay, i)}}
    if rest in simple:
        return [(simple[rest], tensor)]
    for meg, hf_stem in _mlp_pairs(lay, i):
        if rest == meg + "linear_fc1.weight":
            gate, up = tensor.chunk(2)
            return [(h + hf_stem + "gate_proj.weight", gate), (h + hf_stem + "up_proj.weight", up)]
        if rest == meg + "linear_fc2.weight":
            return [(h + hf_stem + "down_proj.weight", tensor)]
    raise ArealError(f"train engine 'megatron': no HF name for megatron weight {name!r}")


def megatron_to_hf(state: dict[str, torch.Tensor], lay: Layout) -> Iterator[tuple[str, torch.Tensor]]:
    """HF names and tensors from a full megatron state (the inverse of :func:`hf_to_megatron`)."""
    for name, tensor in state.items():
        yield from to_hf(name, tensor, lay)


def _hf_names(lay: Layout) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}  # lm_head: tied copies may be saved
    for i in range(lay.num_layers):
        h = f"model.layers.{i}."
        names |= {h + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.o_proj.weight")}
        names |= {f"{h}{stem}{p}_proj.weight" for _, stem in _mlp_pairs(lay, i) for p in ("gate", "up", "down")}
        names |= {h + hf_name for _, hf_name in _moe_singles(lay, i)}
        names |= {f"{h}self_attn.{p}_proj.weight" for p in "qkv"}
        if lay.qkv_bias:
            names |= {f"{h}self_attn.{p}_proj.bias" for p in "qkv"}
        if lay.qk_norm:
            names |= {h + "self_attn.q_norm.weight", h + "self_attn.k_norm.weight"}
    return names
