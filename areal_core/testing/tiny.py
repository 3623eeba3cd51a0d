"""Tiny, deterministic, fully offline Hugging Face models for tests, examples and benchmarks.

``make_tiny_model(path)`` writes a Qwen2-architecture causal LM and a byte-level BPE tokenizer
(ChatML template) to ``path``; every component that takes a model path loads it like any other
HF directory. Same arguments, same bytes.
"""

from __future__ import annotations

import string
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

SIZES = {
    # name: (hidden, layers, heads, kv_heads, head_dim, intermediate)
    "0.2m": (64, 2, 2, 1, 32, 256),
    "3m": (256, 4, 4, 2, 64, 768),
    "18m": (512, 6, 8, 2, 64, 1536),
}


def default_corpus() -> list[str]:
    """Synthetic lines covering digits, arithmetic and English letters (tokenizer training only)."""
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        lines.append(f"What is {a} + {b}? The answer is {a + b}. Use <answer>{a * b % 97}</answer> tags.")
        lines.append(" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 8))) for _ in range(8)))
    return lines


def make_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen2's normaliser and pre-tokenizer.

    Trained with the same pipeline that ``AutoTokenizer`` rebuilds for a ``qwen2`` directory, so
    it tokenizes identically after a save/reload round trip.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    qwen_split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen_split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or default_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_model(path: str | Path, size: str = "0.2m", vocab_size: int = 512, seed: int = 0,
                    corpus: list[str] | None = None, tie_word_embeddings: bool = True) -> Path:
    """Write a tiny Qwen2 causal LM + tokenizer to ``path`` (an HF directory) and return it."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size, corpus)
    hidden, layers, heads, kv, head_dim, inter = SIZES[size]
    config = Qwen2Config(  # type: ignore[call-arg]  # head_dim: taken, though the signature omits it
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=head_dim, intermediate_size=inter, tie_word_embeddings=tie_word_embeddings,
        max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
