"""Tiny HF decoders of every converted architecture, written at test time (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("qwen2_tied", "qwen2_untied", "llama", "qwen3", "qwen2_moe", "qwen3_moe")


def make_model(path: str | Path, arch: str = "qwen2_tied", layers: int = 2) -> Path:
    """An HF directory (config, safetensors, tokenizer): hidden 128, 4 query heads in 2 groups of
    head size 32 (so t = 2 splits heads and groups), MLP 256, vocab 512, seeded. The MoE archs
    have 4 experts of MLP 64, top 2: ``qwen3_moe`` in every layer (renormalised top-k),
    ``qwen2_moe`` with a gated shared expert (MLP 96), plain top-k weights and its last layer
    dense (``mlp_only_layers``)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen2MoeConfig, Qwen3Config, Qwen3MoeConfig

    from areal_core.testing.tiny import make_tokenizer

    path = Path(path)
    tokenizer = make_tokenizer(512)
    common = dict(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, intermediate_size=256, max_position_embeddings=2048,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                  tie_word_embeddings=arch != "qwen2_untied")
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, decoder_sparse_step=1)
    config = {"qwen2_tied": Qwen2Config, "qwen2_untied": Qwen2Config, "llama": LlamaConfig, "qwen3": Qwen3Config,
              "qwen2_moe": lambda **kw: Qwen2MoeConfig(**moe, shared_expert_intermediate_size=96, norm_topk_prob=False,
                                                       mlp_only_layers=[layers - 1], **kw),
              "qwen3_moe": lambda **kw: Qwen3MoeConfig(**moe, norm_topk_prob=True, **kw)}[arch](**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # norms away from 1 and biases away from 0, so a swapped name shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
