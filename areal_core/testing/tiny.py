"""Tiny, deterministic, fully offline Hugging Face models for tests, examples and benchmarks.

``make_tiny_model(path)`` writes a causal LM and a byte-level BPE tokenizer (ChatML template) to
``path``; every component that takes a model path loads it like any other HF directory. Same
arguments, same bytes. ``arch`` picks the family (:data:`ARCHS`): ``qwen2`` (default), ``qwen3``
(q/k norms) or ``qwen3_moe`` (4 experts, top-2 routing, in every layer; transformers keeps the
experts fused in memory and per expert in the saved files) or ``qwen2_5_vl`` (a vision-language
model: a 2-block ViT whose merged 28×28-pixel patches become ``<|image_pad|>`` tokens of a 0.2m
text model with multi-axis rotary positions; the directory also holds the image processor, so
``AutoImageProcessor`` loads it, and a chat template that renders ``{"type": "image"}`` items as
``<|vision_start|><|image_pad|><|vision_end|>``) or ``qwen3_vl`` (the same for Qwen3-VL: 16-pixel
patches, interleaved multi-axis rotary positions, deepstack features from the first ViT block).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

ARCHS = ("qwen2", "qwen3", "qwen3_moe", "qwen2_5_vl", "qwen3_vl")
VL_ARCHS = ("qwen2_5_vl", "qwen3_vl")
VL_PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}  # ViT patch side in pixels (a token merges 2x2 patches)
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# a chat template whose messages may hold [{"type": "image"}, {"type": "text", "text": ...}] lists
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# images are resized to between 2x2 and 4x4 merged patches: 4..16 image tokens
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

    if arch in VL_ARCHS:
        return _vl_config(arch, size, vocab_size, tie_word_embeddings, **extra)
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


def _vl_config(arch: str, size: str, vocab_size: int, tie_word_embeddings: bool, **extra):
    """A tiny Qwen2.5-VL / Qwen3-VL config; ``extra`` must name the vision token ids (``image_token_id``...)."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    hidden, layers, heads, kv, head_dim, inter = SIZES[size]
    token_ids = {k: extra.pop(k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                           "vision_end_token_id")}
    # mrope splits head_dim/2 rotary frequencies over (time, height, width)
    half = head_dim // 2
    rope = {"rope_type": "default", "rope_theta": 10000.0,
            "mrope_section": [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]}
    text = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=2048,
                tie_word_embeddings=tie_word_embeddings, bos_token_id=None, rope_parameters=rope, **extra)
    vision: dict[str, Any] = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                  out_hidden_size=hidden, patch_size=VL_PATCH[arch], spatial_merge_size=2,
                                  temporal_patch_size=2)
    if arch == "qwen3_vl":
        rope["mrope_interleaved"] = True
        text["head_dim"] = head_dim
        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings,
                             **token_ids)
    vision.update(window_size=56, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings,
                            **token_ids)


def make_tiny_model(path: str | Path, size: str = "0.2m", vocab_size: int = 512, seed: int = 0,
                    corpus: list[str] | None = None, tie_word_embeddings: bool = True, arch: str = "qwen2") -> Path:
    """Write a tiny ``arch`` model + tokenizer (+ image processor for ``qwen2_5_vl``) to ``path``
    (an HF directory) and return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size, corpus)
    extra = {}
    if arch in VL_ARCHS:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *VISION_TOKENS]})
        tokenizer.chat_template = VL_CHAT_TEMPLATE
        ids = tokenizer.convert_tokens_to_ids(VISION_TOKENS)
        extra = dict(vision_start_token_id=ids[0], vision_end_token_id=ids[1], image_token_id=ids[2],
                     video_token_id=ids[3])
    config = tiny_config(arch, size, len(tokenizer), tie_word_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(seed)
    if arch in VL_ARCHS:
        from transformers import Qwen2VLImageProcessorPil

        model = AutoModelForImageTextToText.from_config(config)
        token_side = 2 * VL_PATCH[arch]
        Qwen2VLImageProcessorPil(patch_size=VL_PATCH[arch], min_pixels=(2 * token_side) ** 2,
                                 max_pixels=(4 * token_side) ** 2).save_pretrained(path)
    else:
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


def random_picture(seed: int, size: tuple[int, int] = (96, 80), shapes: int = 3):
    """A PIL RGB picture of ``shapes`` random coloured rectangles and ellipses on white (test
    input for the tiny vision-language model; ``size`` is (width, height))."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(shapes):
        x, y = rng.randrange(width - 16), rng.randrange(height - 16)
        box = (x, y, x + rng.randint(8, 16), y + rng.randint(8, 16))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    return image


def vision_prompt(model_dir: str | Path, text: str, images: list) -> tuple[list[int], dict]:
    """(input_ids with every image's placeholder tokens, the images' model inputs) for a user
    message of ``images`` then ``text``, through the tiny VL model's chat template and processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from areal_core.multimodal import expand_image_tokens, image_inputs, image_token_counts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    content: list[dict[str, str]] = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    messages: Any = [{"role": "user", "content": content}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not images:
        return ids, {}
    inputs = image_inputs(processor, images)
    image_token = int(tokenizer.convert_tokens_to_ids("<|image_pad|>"))  # type: ignore[arg-type]  # one token: an int
    return expand_image_tokens(ids, image_token, image_token_counts(processor, inputs)), inputs
