"""Build the model an engine trains: load the HF directory, add LoRA, shard with FSDP2.

Sharding: every module whose class name is in the model's ``_no_split_modules`` (its decoder
layers, e.g. ``Qwen2DecoderLayer``) becomes its own FSDP unit, then the root holds the rest
(embeddings, final norm, head). Each unit's parameters are gathered just before its forward
and freed after, so peak memory is one layer's full parameters plus the shards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from areal_core.plugin import ArealError, check_full_attention
from areal_fsdp import attention
from areal_fsdp.config import FSDPEngineConfig, LoRAConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def attention_implementation(cfg: FSDPEngineConfig, device: torch.device) -> str:
    """The transformers ``attn_implementation`` name. auto: ``flash_attention_2`` on CUDA when
    flash-attn is importable, else length-bucketed varlen SDPA (:mod:`areal_fsdp.attention`)."""
    choice = cfg.attn_implementation
    if choice == "auto":
        choice = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "varlen_sdpa"
    return attention.register() if choice == "varlen_sdpa" else choice


def takes_cu_seqlens(attn: str) -> bool:
    """Whether this attention reads document boundaries from ``cu_seq_lens_q/k`` kwargs."""
    return attn in ("flash_attention_2", attention.NAME)


def check_model_dir(cfg: FSDPEngineConfig, path: str) -> None:
    if not Path(path, "config.json").is_file():
        raise ArealError(f"train engine {cfg.name!r}: path {path!r} is not a Hugging Face model directory "
                         f"(no config.json)")


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer in backward (non-reentrant, which FSDP2 requires)."""
    base = _unwrap_peft(model)
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_vision_language(hf_config) -> bool:
    """Whether ``hf_config`` is a vision-language model's (it has a vision tower)."""
    return getattr(hf_config, "vision_config", None) is not None


def auto_class(hf_config, critic: bool) -> Any:
    """The transformers auto class for ``hf_config``: token classification for a critic,
    image-text-to-text for a vision-language model, else causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForTokenClassification

    if critic:
        return AutoModelForTokenClassification
    return AutoModelForImageTextToText if is_vision_language(hf_config) else AutoModelForCausalLM


def load_hf_model(cfg: FSDPEngineConfig, path: str, attn: str) -> torch.nn.Module:
    """The unsharded HF model on CPU: a causal LM, a vision-language model (its vision tower
    attends with plain ``sdpa``: packed attention is for the text), or a 1-label token
    classifier (critic)."""
    from transformers import AutoConfig

    check_model_dir(cfg, path)
    kwargs: dict[str, Any] = dict(dtype=DTYPES[cfg.dtype], attn_implementation=attn, trust_remote_code=cfg.trust_remote_code)
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    vision = is_vision_language(config) and not cfg.critic
    try:
        if cfg.critic:
            # no dropout before the value head (transformers defaults it to 0.1): values in train_batch
            # must be the ones forward() gives, for GAE targets and for pair losses alike
            config = AutoConfig.from_pretrained(path, num_labels=1, trust_remote_code=cfg.trust_remote_code)
            config.classifier_dropout = 0.0
            kwargs["config"] = config
        elif vision:
            kwargs["attn_implementation"] = {"text_config": attn, "vision_config": "sdpa", "": attn}
        model = auto_class(config, cfg.critic).from_pretrained(path, **kwargs)
    except (ValueError, KeyError) as exc:
        kind = "token classification (critic)" if cfg.critic else "vision-language" if vision else "causal LM"
        raise ArealError(f"train engine {cfg.name!r}: cannot load {path!r} as a {kind} model: {exc}") from exc
    model.config.use_cache = False
    if attn == attention.NAME:
        check_full_attention(model.config, f"train engine {cfg.name!r} (attn_implementation {attn!r})")
    return model


def peft_lora_config(lora: LoRAConfig):
    from peft import LoraConfig

    # lora_alpha: peft annotates int; a float scales the update alike
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,  # type: ignore[arg-type]
                      target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")


def add_lora(model: torch.nn.Module, lora: LoRAConfig) -> torch.nn.Module:
    """Wrap with peft LoRA adapters; only adapter weights keep ``requires_grad``."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(lora))


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """{alias: canonical} for parameters registered under several names (tied embeddings)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def shard(model: torch.nn.Module, mesh: DeviceMesh, mixed_precision: bool) -> torch.nn.Module:
    """Apply ``fully_shard`` to each decoder layer and the root (in place; returns the model)."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()
    layer_classes = set(getattr(_unwrap_peft(model), "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, mesh=mesh, mp_policy=policy)
    model.register_forward_hook(_logits_not_a_view)  # before fully_shard's own hook, which sees its result
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _logits_not_a_view(module: torch.nn.Module, args: Any, output: Any) -> Any:
    """The output with ``logits`` copied when it is a view (a head with a bias, e.g. the critic's
    ``score`` Linear(H, 1), returns ``addmm(...).view(...)``): FSDP2 warns on every forward of a root
    that returns a view, as an in-place op on it would skip its pre-backward hook. Nothing here
    modifies logits in place; the copy is [1, t, 1] for a critic, and a causal LM head's logits are
    not views (no copy)."""
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor) and logits._base is not None:
        output.logits = logits.clone()
    return output


def _unwrap_peft(model: torch.nn.Module) -> Any:
    """The transformers model under a peft wrapper (Any: which methods it has depends on the version)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
