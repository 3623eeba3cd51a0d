"""Build a megatron-core GPTModel for an HF decoder directory and load its weights into it.

The TransformerConfig mirrors the HF config (RMSNorm, SwiGLU MLP, RoPE with the HF ``rope_theta``,
grouped-query attention, Qwen2's QKV bias, Qwen3's per-head q/k norm, and for Qwen2/3-MoE the
routed experts, their router and the gated shared expert); fused kernels that need CUDA extensions
(apex, Transformer Engine, rope/bias fusions, grouped GEMM) are off with the local layer spec.

Mixture of experts: dropless (no capacity factor), no auxiliary load-balancing loss (HF adds its
router loss only when asked for router logits; areal's fsdp engine does not add it either), the
``moe_token_dispatcher`` the config names (``allgather``, the one that runs over gloo, or
``alltoall``) and one ``SequentialMLP`` per layer, its experts split over the ``expert_parallel`` ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from areal_core.plugin import ArealError
from areal_megatron import sharding
from areal_megatron.config import MegatronEngineConfig
from areal_megatron.convert import Layout, hf_to_megatron

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def rope_theta(hf_config) -> float:
    """HF's RoPE base (transformers 5 keeps it in ``rope_parameters``); only the default rope type."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise ArealError(f"train engine 'megatron': rope_type {kind!r} is not converted (only the default RoPE)")
    return float(params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)))


def check_divisible(cfg: MegatronEngineConfig, lay: Layout, world_size: int) -> None:
    """Clear errors for a parallel layout the model or the world size cannot take."""
    tp, pp, ep = cfg.tensor_parallel, cfg.pipeline_parallel, cfg.expert_parallel
    if world_size % (tp * pp):
        raise ArealError(f"train engine {cfg.name!r}: tensor_parallel·pipeline_parallel = {tp}·{pp} does not divide "
                         f"the {world_size} trainer ranks")
    if ep > 1 and not lay.num_experts:
        raise ArealError(f"train engine {cfg.name!r}: expert_parallel={ep} needs a mixture-of-experts model "
                         f"({cfg.path or 'the model'} has no experts)")
    if lay.num_experts and tp > 1:  # megatron's MoE layer refuses to train so (a ValueError mid-step)
        raise ArealError(f"train engine {cfg.name!r}: a mixture-of-experts model with tensor_parallel={tp} needs "
                         "sequence parallel, which this engine does not implement; split the experts with "
                         "expert_parallel instead")
    if (world_size // (tp * pp)) % ep:
        raise ArealError(f"train engine {cfg.name!r}: expert_parallel={ep} does not divide the "
                         f"{world_size // (tp * pp)} data-parallel ranks (world {world_size} / (t·p = {tp}·{pp}))")
    for what, n, by, field in (("attention heads", lay.num_heads, tp, "tensor_parallel"),
                               ("key/value heads", lay.num_groups, tp, "tensor_parallel"),
                               ("layers", lay.num_layers, pp, "pipeline_parallel"),
                               ("experts", lay.num_experts, ep, "expert_parallel")):
        if n % by:
            raise ArealError(f"train engine {cfg.name!r}: {n} {what} are not divisible by {field}={by}")


def transformer_config(hf_config, lay: Layout, cfg: MegatronEngineConfig) -> Any:
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = DTYPES[cfg.dtype]
    return TransformerConfig(**moe_options(hf_config, lay, cfg),
        num_layers=lay.num_layers, hidden_size=hf_config.hidden_size, num_attention_heads=lay.num_heads,
        num_query_groups=lay.num_groups, kv_channels=lay.head_dim, ffn_hidden_size=hf_config.intermediate_size,
        normalization="RMSNorm", layernorm_epsilon=hf_config.rms_norm_eps, gated_linear_unit=True,
        activation_func=torch.nn.functional.silu, add_bias_linear=False, add_qkv_bias=lay.qkv_bias,
        qk_layernorm=lay.qk_norm, hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=cfg.tensor_parallel, pipeline_model_parallel_size=cfg.pipeline_parallel,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=dtype == torch.bfloat16,
        # initialised on the device, then overwritten by the HF weights (megatron marks tensor-parallel
        # parameters, which the sharding relies on, only when it initialises them)
        use_cpu_initialization=False, perform_initialization=True,
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False, bias_dropout_fusion=False,
        apply_rope_fusion=False, gradient_accumulation_fusion=False, attention_softmax_in_fp32=True,
        calculate_per_token_loss=True,  # the engine scales each micro-batch's loss itself (global token mean)
    )


def moe_options(hf_config, lay: Layout, cfg: MegatronEngineConfig) -> dict[str, Any]:
    """TransformerConfig's mixture-of-experts fields ({} for a dense model)."""
    if not lay.num_experts:
        return {}
    shared = getattr(hf_config, "shared_expert_intermediate_size", 0) or None
    return dict(
        num_moe_experts=lay.num_experts, moe_router_topk=hf_config.num_experts_per_tok,
        moe_ffn_hidden_size=hf_config.moe_intermediate_size, moe_layer_freq=[int(m) for m in lay.moe_layers],
        # HF: softmax over all experts, top k, renormalised if norm_topk_prob (see convert.py)
        moe_router_pre_softmax=not hf_config.norm_topk_prob, moe_router_score_function="softmax",
        moe_router_dtype="fp32", moe_router_load_balancing_type="none", moe_aux_loss_coeff=0.0,
        moe_token_dispatcher_type=cfg.moe_token_dispatcher, moe_grouped_gemm=False, moe_permute_fusion=False,
        moe_shared_expert_intermediate_size=shared, moe_shared_expert_gate=shared is not None,
        expert_model_parallel_size=cfg.expert_parallel)


def layer_spec(cfg: MegatronEngineConfig, lay: Layout, config: Any) -> Any:
    """The layer spec; for a mixture-of-experts model, the per-layer block spec (dense and MoE
    layers as ``moe_layer_freq`` says)."""
    if lay.num_experts:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

        return get_gpt_decoder_block_spec(config, use_transformer_engine=cfg.layer_spec == "transformer_engine",
                                          normalization="RMSNorm")
    if cfg.layer_spec == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=lay.qk_norm)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(qk_layernorm=lay.qk_norm, normalization="RMSNorm")


def _router_without_transformer_engine() -> None:
    """megatron-core 0.16's router GEMM tests ``te_general_gemm is not None``, a name its
    ``moe_utils`` defines only when Transformer Engine imports (NameError without TE, on any
    device): define it as None there, the fallback the code means (a plain matmul)."""
    from megatron.core.transformer.moe import moe_utils

    if not moe_utils.HAVE_TE and not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None  # type: ignore[attr-defined]


def build(hf_config, lay: Layout, cfg: MegatronEngineConfig) -> torch.nn.Module:
    """This pipeline stage's GPTModel (weights uninitialised: call :func:`load_hf_weights`)."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt.gpt_model import GPTModel

    if lay.num_experts:
        _router_without_transformer_engine()
    config = transformer_config(hf_config, lay, cfg)
    return GPTModel(
        config=config, transformer_layer_spec=layer_spec(cfg, lay, config),
        vocab_size=sharding.padded_vocab(hf_config.vocab_size, cfg.tensor_parallel),
        max_sequence_length=hf_config.max_position_embeddings, pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(), share_embeddings_and_output_weights=lay.tied,
        position_embedding_type="rope", rotary_base=rope_theta(hf_config),
    )


def read_hf_state(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in HF directory ``path`` (full, on CPU)."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ArealError(f"train engine 'megatron': {path!r} has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_hf_weights(model: torch.nn.Module, hf_state: dict[str, torch.Tensor], lay: Layout,
                    cfg: MegatronEngineConfig) -> None:
    """Copy this rank's shard of every weight into ``model`` (strict: no parameter left unset)."""

    full = hf_to_megatron(hf_state, lay)
    if lay.tied:  # the last stage's copy of the embedding (pipeline parallel)
        full["output_layer.weight"] = full["embedding.word_embeddings.weight"]
    place = sharding.Placement.current(lay)
    with torch.no_grad():
        for name, param in model.named_parameters():
            source = place.global_name(name)
            if source not in full:
                raise ArealError(f"train engine 'megatron': no HF weight converts to megatron parameter {name!r}")
            tp, rank, _ = place.tensor_split(name)
            param.copy_(sharding.shard(source, full[source], param, tp, rank, gated=True))
