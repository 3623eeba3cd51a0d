"""Config of the ``megatron`` train engine (the ``actor:`` / ``ref:`` section of a run)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from areal_core.plugin import ComponentConfig
from areal_fsdp.config import OptimizerConfig


class MegatronEngineConfig(ComponentConfig):
    """megatron-core GPTModel with tensor, pipeline and data parallelism."""

    name: str = Field("megatron", description="registered name of the train engine")
    path: str | None = Field(None, description="local HF model directory (Qwen2, Qwen3, Llama, Qwen2/3-MoE); unset: the run's model_path")
    device: str = Field("auto", description="a registered device name (cuda, npu, cpu...); auto: the run's `device` "
                                            "section, standalone: cuda when available, else cpu")
    tensor_parallel: int = Field(1, ge=1, description="tensor-parallel size t (divides attention heads and key/value "
                                                      "heads); the actor's scheduler.allocation part (t) sets it too")
    pipeline_parallel: int = Field(1, ge=1, description="pipeline-parallel size p (divides the layer count; 1F1B "
                                                        "schedule); the allocation part (p) sets it too")
    expert_parallel: int = Field(1, ge=1, description="expert-parallel size e for a mixture-of-experts model: each "
                                                      "of e data-parallel ranks holds E/e of every layer's experts "
                                                      "(divides the expert count and world/(t·p)); the allocation "
                                                      "part (e) sets it too")
    moe_token_dispatcher: Literal["allgather", "alltoall"] = Field(
        "allgather", description="how expert-parallel ranks exchange tokens in a MoE layer: allgather (runs on gloo "
                                 "too; every rank sees every token) or alltoall (each token to its experts' ranks; "
                                 "NCCL)")
    layer_spec: Literal["local", "transformer_engine"] = Field(
        "local", description="megatron layer implementation: local (plain torch) or transformer_engine (needs TE, GPU)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of parameters and compute")
    max_tokens_per_mb: int = Field(8192, ge=1, description="token budget of one micro-batch")
    pack_sequences: bool = Field(True, description="pack a micro-batch's sequences several to a row (rows as long "
                                                   "as its longest sequence) under a block-diagonal causal mask; "
                                                   "false: one sequence per row, right-padded")
    logprob_chunk_tokens: int = Field(1024, ge=1, description="tokens per chunk when turning logits into logprobs/entropy")
    temperature: float = Field(1.0, gt=0, description="logits are divided by this in train_batch; set it to the "
                                                      "rollout sampling temperature")
    weight_bucket_bytes: int = Field(256 << 20, ge=1, description="named_full_weights (weight sync, HF export) "
                                                                 "gathers and yields full tensors in buckets of about "
                                                                 "this many bytes: the most rank 0 holds at once "
                                                                 "(a larger tensor is a bucket of its own)")
    seed: int | None = Field(None, description="seed for RNG; unset: the run's seed, else 1")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW and LR schedule")
