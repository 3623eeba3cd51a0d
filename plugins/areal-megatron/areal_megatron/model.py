"""Build a megatron-core GPTModel for an HF decoder directory and load its weights into it.

The TransformerConfig mirrors the HF config (RMSNorm, SwiGLU MLP, RoPE with the HF ``rope_theta``,
grouped-query attention, Qwen2's QKV bias, Qwen3's per-head q/k norm); fused kernels that need
CUDA extensions (apex, Transformer Engine, rope/bias fusions) are off with the local layer spec.
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
    tp, pp = cfg.tensor_parallel, cfg.pipeline_parallel
    if world_size % (tp * pp):
        raise ArealError(f"train engine {cfg.name!r}: tensor_parallel·pipeline_parallel = {tp}·{pp} does not divide "
                         f"the {world_size} trainer ranks")
    for what, n, by in (("attention heads", lay.num_heads, tp), ("key/value heads", lay.num_groups, tp),
                        ("layers", lay.num_layers, pp)):
        if n % by:
            raise ArealError(f"train engine {cfg.name!r}: {n} {what} are not divisible by "
                             f"{'tensor' if by == tp else 'pipeline'}_parallel={by}")


def transformer_config(hf_config, lay: Layout, cfg: MegatronEngineConfig) -> Any:
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = DTYPES[cfg.dtype]
    return TransformerConfig(
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


def layer_spec(cfg: MegatronEngineConfig, lay: Layout) -> Any:
    if cfg.layer_spec == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=lay.qk_norm)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(qk_layernorm=lay.qk_norm, normalization="RMSNorm")


def build(hf_config, lay: Layout, cfg: MegatronEngineConfig) -> torch.nn.Module:
    """This pipeline stage's GPTModel (weights uninitialised: call :func:`load_hf_weights`)."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt.gpt_model import GPTModel

    return GPTModel(
        config=transformer_config(hf_config, lay, cfg), transformer_layer_spec=layer_spec(cfg, lay),
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
    from megatron.core import parallel_state as ps

    full = hf_to_megatron(hf_state, lay)
    if lay.tied:  # the last stage's copy of the embedding (pipeline parallel)
        full["output_layer.weight"] = full["embedding.word_embeddings.weight"]
    layers = sharding.layer_range(lay.num_layers, cfg.pipeline_parallel, ps.get_pipeline_model_parallel_rank())
    tp, rank = cfg.tensor_parallel, ps.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in model.named_parameters():
            source = sharding.to_global_name(name, layers)
            if source not in full:
                raise ArealError(f"train engine 'megatron': no HF weight converts to megatron parameter {name!r}")
            param.copy_(sharding.shard(source, full[source], param, tp, rank, gated=True))
