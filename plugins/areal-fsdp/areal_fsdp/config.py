"""Config of the ``fsdp`` train engine: the ``actor:`` / ``critic:`` / ``ref:`` section of a run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from areal_core.plugin import ComponentConfig, StrictModel


class OptimizerConfig(StrictModel):
    """AdamW with a warmup + decay learning-rate schedule and gradient-norm clipping."""

    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warmup from lr/(warmup_steps+1) to lr")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="after warmup: keep lr, decay linearly, or follow a half cosine down to min_lr_ratio·lr")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (linear and cosine)")
    total_steps: int | None = Field(
        None, ge=1, description="optimizer steps the schedule spans; unset: the run context's (the run's "
                                "optimizer steps: trainer.total_steps × the algorithm's steps per train "
                                "step); required for linear and cosine")
    gradient_clipping: float | None = Field(
        1.0, gt=0, description="clip the global gradient L2 norm to this value; null: no clipping (norm still reported)")


class LoRAConfig(StrictModel):
    """LoRA adapters through peft: only the adapters train."""

    enabled: bool = Field(False, description="wrap the model with LoRA adapters and freeze the base weights")
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is (alpha/r)·B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'")
    export: Literal["merged", "adapter"] = Field(
        "merged", description="export_hf writes merged full weights, or the adapter alone (peft format)")


class FSDPEngineConfig(ComponentConfig):
    """The FSDP2 train engine: one model + AdamW sharded over every data-parallel rank."""

    name: str = Field("fsdp", description="registered name of the train engine")
    path: str | None = Field(None, description="local HF model directory or hub id (org/name); unset: the run's model_path")
    critic: bool = Field(False, description="load a token-classification head with one label (value model, "
                                            "forward returns values [T]) instead of a causal LM")
    device: str = Field("auto", description="a registered device name (cpu, cuda, npu...); auto: the run's `device` "
                                            "section, standalone: cuda when available, else cpu")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the stored (sharded) parameters and optimizer state")
    mixed_precision: bool = Field(
        False, description="compute forward/backward in bfloat16 while keeping float32 parameters and "
                           "reducing gradients in float32 (FSDP2 MixedPrecisionPolicy)")
    gradient_checkpointing: bool = Field(False, description="recompute decoder-layer activations in backward")
    max_tokens_per_mb: int = Field(8192, ge=1, description="token budget of one micro-batch (packed, no padding)")
    logprob_chunk_tokens: int = Field(1024, ge=1, description="tokens per chunk when turning logits into "
                                                               "logprobs/entropy (bounds the [chunk, vocab] temporaries)")
    temperature: float = Field(1.0, gt=0, description="logits are divided by this in train_batch; set it to the "
                                                      "rollout sampling temperature")
    attn_implementation: Literal["auto", "varlen_sdpa", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention over packed rows; auto: flash_attention_2 (varlen) on CUDA when flash-attn is "
                            "installed, else varlen_sdpa (causal SDPA on length buckets of documents); sdpa/eager: transformers' "
                            "block-diagonal mask over the whole row")
    prefix_sharing: bool = Field(
        True, description="with varlen_sdpa attention: the sequences of one group (the n samples of a prompt) keep "
                          "a single copy of their common prefix in a micro-batch, which the others attend to "
                          "(same logprobs and gradients, fewer tokens); other attention implementations and "
                          "vision-language models train every sequence in full")
    check_packing: bool = Field(True, description="at initialize, verify that two packed sequences give the "
                                                    "same outputs as each alone (fails fast on attention leaks)")
    seed: int | None = Field(None, description="seed for initialising new heads and for RNG; unset: the run's seed, else 1")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW and LR schedule")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA adapters (peft)")
    trust_remote_code: bool = Field(False, description="allow model code shipped in the model directory")

    @model_validator(mode="after")
    def _check(self):
        if self.critic and self.lora.enabled:
            raise ValueError("lora.enabled with critic=true is not supported (the value head would stay frozen)")
        if "prefix_sharing" in self.model_fields_set and self.prefix_sharing and \
                self.attn_implementation not in ("auto", "varlen_sdpa"):
            raise ValueError(f"prefix_sharing needs attn_implementation varlen_sdpa (or auto), "
                             f"not {self.attn_implementation!r}")
        return self
