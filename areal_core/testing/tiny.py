"""Tiny, deterministic, fully offline Hugging Face models for tests, examples and benchmarks.

``make_tiny_model(path)`` writes a causal LM and a byte-level BPE tokenizer (ChatML template) to
``path``; every component that takes a model path loads it like any other HF directory. Same
arguments, same bytes. ``arch`` picks the family (:data:`ARCHS`): ``qwen2`` (default), ``qwen3``
(q/k norms) or ``qwen3_moe`` (4 experts, top-2 routing, in every layer; transformers keeps the
experts fused in memory and per expert in the saved files).
"""

from __future__ import annotations

import string
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

ARCHS = ("qwen2", "qwen3", "qwen3_moe")
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


def tiny_config(arch: str, size: str, vocab_size: int, tie_word_embeddings: bool = True, **extra):
    """The transformers config of a tiny ``arch`` model of ``size`` (see :data:`ARCHS`, :data:`SIZES`)."""
    from transformers import Qwen2Config, Qwen3Config, Qwen3MoeConfig

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r} is not one of {ARCHS}")
    hidden, layers, heads, kv, head_dim, inter = SIZES[size]
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv, head_dim=head_dim, intermediate_size=inter,
                  tie_word_embeddings=tie_word_embeddings, max_position_embeddings=2048, bos_token_id=None, **extra)
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=inter // 4,
                              decoder_sparse_step=1, norm_topk_prob=True, **common)
    return (Qwen3Config if arch == "qwen3" else Qwen2Config)(**common)


def make_tiny_model(path: str | Path, size: str = "0.2m", vocab_size: int = 512, seed: int = 0,
                    corpus: list[str] | None = None, tie_word_embeddings: bool = True, arch: str = "qwen2") -> Path:
    """Write a tiny ``arch`` causal LM + tokenizer to ``path`` (an HF directory) and return it."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size, corpus)
    config = tiny_config(arch, size, len(tokenizer), tie_word_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cache_as_hub_model(model_dir: str | Path, cache_dir: str | Path, repo_id: str,
                       commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Put the files of ``model_dir`` into a Hugging Face hub cache at ``cache_dir`` as the
    snapshot of ``repo_id`` (what ``snapshot_download`` leaves behind, laid out the same way:
    ``models--org--name/refs/main`` naming a commit, ``snapshots/<commit>/<files>``). Returns the
    snapshot directory. Lets tests use hub ids with no network."""
    import shutil

    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot, dirs_exist_ok=True)
    return snapshot


def with_sliding_window(model_dir: str | Path, window: int = 16) -> Path:
    """Turn the tiny Qwen2/Qwen3 model at ``model_dir`` into one whose later layers attend
    through a ``window``-token sliding window (its config only; the weights stay)."""
    import json

    config_file = Path(model_dir) / "config.json"
    config = json.loads(config_file.read_text())
    layers = config["num_hidden_layers"]
    config.update(use_sliding_window=True, sliding_window=window, max_window_layers=1,
                  layer_types=["full_attention"] + ["sliding_attention"] * (layers - 1))
    config_file.write_text(json.dumps(config, indent=2))
    return Path(model_dir)
