"""The model side of the server: a Hugging Face causal LM, its KV cache, and weight loading.

``ModelRunner`` does no scheduling: the scheduler tells it which rows to prefill or decode.

Shapes: B running rows, N new rows, P = longest new prompt, V = vocabulary, L = attended slots.
- ``prefill(prompts, row_start, media)``: prompts are left-padded to P and written to rows
  ``row_start..row_start+N-1`` at slots ``0..P-1``; returns last-position logits [N, V].
  ``media[n]`` holds prompt n's image inputs (:mod:`areal_core.multimodal`; ``{}`` for text),
  concatenated in row order into the model's forward; a model with multi-axis rotary positions
  gets each row's ``[3, P]`` positions from its own ``get_rope_index``.
- ``decode(tokens, starts, ends, offsets)``: one new token per row 0..B-1, written at slot
  ``ends[b]`` with position ``ends[b] - starts[b] + offsets[b]`` (``offsets``: what the prefill
  returned for the row; 0 unless its prompt had images); returns logits [B, V]. Text models
  read each row's slots only up to about its own length (:mod:`areal_embedded.attention`).
The 4-D boolean mask lets query i of row b see slots ``starts[b]..slot(i)`` (and itself, so a
padding query never has an empty softmax).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from areal_core.plugin import (
    ArealError,
    CheckpointLayout,
    check_full_attention,
    concat_inputs,
    resolve_model_path,
    rope_positions,
    uses_rope_index,
)
from areal_embedded import attention
from areal_embedded.kv_cache import SlotKVCache
from areal_embedded.lora import AdapterWeights

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ArealError(f"--dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


class ModelRunner:
    """Owns the model and the KV cache of up to ``max_rows`` concurrent sequences."""

    def __init__(self, model_path: str, max_rows: int, device: str = "auto", dtype: str = "auto",
                 max_len: int | None = None):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

        model_path = resolve_model_path(model_path, "--model")
        self.model_path = model_path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if not Path(model_path, "config.json").is_file():
            raise ArealError(f"--model {model_path!r} is not a Hugging Face model directory (no config.json)")
        config = AutoConfig.from_pretrained(model_path)
        check_full_attention(config, "the embedded server")  # its masks are full causal attention
        self.vision = getattr(config, "vision_config", None) is not None  # a vision-language model
        model_class = AutoModelForImageTextToText if self.vision else AutoModelForCausalLM
        # text models decode with rows grouped by length (areal_embedded.attention); the vision
        # towers keep transformers' sdpa
        self.attn_implementation = "sdpa" if self.vision else attention.register()
        self.model = model_class.from_pretrained(model_path, dtype=self.dtype,
                                                 attn_implementation=self.attn_implementation)
        self.image_processor = _image_processor(model_path) if self.vision else None
        self.image_token_id = getattr(config, "image_token_id", None)
        # placeholder tokens stand for pixels: never sampled (a completion holding one would have
        # no image behind it in the trainer's forward)
        self.unsampled = [t for t in (self.image_token_id, getattr(config, "video_token_id", None)) if t is not None]
        self.mrope = uses_rope_index(self.model)
        self.layout = CheckpointLayout(self.model)  # weight updates carry the saved files' names
        self.model.to(self.device).eval().requires_grad_(False)  # type: ignore[arg-type]  # transformers' stub of .to
        self.config = config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.vocab_size = text_config.vocab_size
        limit = getattr(text_config, "max_position_embeddings", None) or 4096
        self.max_len = min(max_len or limit, limit)
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        # left padding in a batched prefill shifts a row's slots by up to one prompt length: 2x room
        self.cache = SlotKVCache(text_config.num_hidden_layers, max_rows, kv_heads, head_dim, 2 * self.max_len,
                                 self.dtype, self.device)
        self.eos_token_ids = _eos_token_ids(self.model)
        self.adapter = AdapterWeights()  # the base weights under a merged LoRA adapter, if one is loaded

    # -- forward passes ------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], row_start: int, media: list[dict] | None = None,
                ) -> tuple[torch.Tensor, list[int], list[int]]:
        """Run N prompts into rows ``row_start..``; returns (logits [N, V], start slot per row,
        position offset per row)."""
        media = media or [{} for _ in prompts]
        longest = max(len(p) for p in prompts)
        starts = [longest - len(p) for p in prompts]
        ids = torch.tensor([[0] * s + p for s, p in zip(starts, prompts)], device=self.device)
        start = torch.tensor(starts, device=self.device).unsqueeze(1)  # [N, 1]
        slots = torch.arange(longest, device=self.device).unsqueeze(0)  # [1, P]
        positions = (slots - start).clamp_(min=0)
        offsets = [0] * len(prompts)
        extra = {k: v.to(self.device) for k, v in concat_inputs(media).items()}
        if self.mrope and extra:
            positions = positions.unsqueeze(0).repeat(3, 1, 1)  # [3, N, P]
            for n, (prompt, inputs) in enumerate(zip(prompts, media)):
                if inputs:
                    row_positions, offsets[n] = rope_positions(self.model, prompt, inputs)
                    positions[:, n, starts[n]:] = row_positions.to(self.device)
        causal = slots.unsqueeze(2) >= slots.unsqueeze(1)  # [1, P(query), P(key)]
        visible = causal & (slots.unsqueeze(1) >= start.unsqueeze(2))  # [N, P, P]
        visible |= torch.eye(longest, dtype=torch.bool, device=self.device)
        self.cache.begin_forward(row_start, slots.expand(len(prompts), -1), longest)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=visible.unsqueeze(1),
                         cache=self.cache, use_cache=True, logits_to_keep=1, **extra)
        return self._sampleable(out.logits[:, -1, :]), starts, offsets

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
               offsets: torch.Tensor | None = None) -> torch.Tensor:
        """One step for rows 0..B-1: ``tokens [B]`` go to slot ``ends [B]``; returns logits [B, V]."""
        kv_len = int(ends.max()) + 1
        slots = torch.arange(kv_len, device=self.device).unsqueeze(0)
        visible = (slots >= starts.unsqueeze(1)) & (slots <= ends.unsqueeze(1))  # [B, L]
        self.cache.begin_forward(0, ends.unsqueeze(1), kv_len)
        positions = ends - starts if offsets is None else ends - starts + offsets
        extra = {}
        if self.attn_implementation == attention.NAME:
            extra[attention.BUCKETS_KWARG] = attention.slot_buckets((ends + 1).tolist(), self.device)
        out = self.model(input_ids=tokens.unsqueeze(1), position_ids=positions.unsqueeze(1),
                         attention_mask=visible[:, None, None, :], cache=self.cache, use_cache=True, **extra)
        return self._sampleable(out.logits[:, -1, :])

    def _sampleable(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [N, V]`` with the image placeholder tokens at -inf (vision-language models)."""
        if self.unsampled:
            logits[:, self.unsampled] = float("-inf")
        return logits

    # -- weights -------------------------------------------------------------------------------

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by its in-memory name (tied weights appear under both names)."""
        return self.model.state_dict()

    def checkpoint_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The served parameters under the saved files' names (what a trainer's sync sends)."""
        return self.layout.to_checkpoint(self.model.named_parameters())

    def check_tensor(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """ArealError unless the model's saved files have a tensor ``name`` of this shape whose
        dtype ``dtype`` may be cast to (floating to floating, anything else only to itself)."""
        self._check(name, shape, dtype, self.layout.shapes, self.layout.dtypes)

    def _check(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
               shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype]) -> None:
        target = shapes.get(name)
        if target is None:
            raise ArealError(f"weight update names {name!r}, which model {self.model_path!r} does not have "
                             f"(it has e.g. {sorted(shapes)[:3]})")
        if target != tuple(shape):
            raise ArealError(f"weight update gives {name!r} shape {tuple(shape)}; the model's is {target}")
        own = dtypes[name]
        if dtype != own and not (dtype.is_floating_point and own.is_floating_point):
            raise ArealError(f"weight update gives {name!r} dtype {dtype}; the model's is {own}")

    def stage(self, tensors: Iterator[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Check every (saved-file name, tensor) against the model without touching it; returns
        the pairs for :meth:`commit`. Raises on the first bad one."""
        staged = []
        for name, value in tensors:
            self.check_tensor(name, tuple(value.shape), value.dtype)
            staged.append((name, value))
        return staged

    @torch.no_grad()
    def commit(self, staged: list[tuple[str, torch.Tensor]]) -> int:
        """Copy staged tensors into the live weights, mapped to the in-memory layout first (fused
        MoE experts need all their pieces: an incomplete set fails before anything is copied);
        returns the number of staged tensors. A loaded adapter is dropped first (when there is
        anything to copy): the new weights are served as they are."""
        own = self.named_tensors()
        values = self.layout.from_checkpoint(dict(staged))
        if staged:
            self.adapter.restore(own)
        for name, value in values.items():
            target = own[name]
            target.copy_(value.to(device=target.device, dtype=target.dtype))
        return len(staged)

    def check_adapter(self, deltas: dict[str, torch.Tensor]) -> None:
        """ArealError unless every adapter delta names a weight of the model with its shape."""
        own = self.named_tensors()  # adapters name the in-memory modules
        shapes, dtypes = {k: tuple(v.shape) for k, v in own.items()}, {k: v.dtype for k, v in own.items()}
        for name, delta in deltas.items():
            self._check(name, tuple(delta.shape), delta.dtype, shapes, dtypes)

    def load_adapter(self, deltas: dict[str, torch.Tensor]) -> int:
        """Serve base + ``deltas`` (checked by :meth:`check_adapter`), replacing any adapter
        loaded before; returns the layers changed."""
        return self.adapter.merge(self.named_tensors(), deltas)

    def unload_adapter(self) -> None:
        """Serve the base weights again."""
        self.adapter.restore(self.named_tensors())

    def load_from_disk(self, path: str) -> int:
        """Load every tensor of the safetensors files in HF directory ``path``; returns the count.

        Transactional: names and shapes of every file are checked from the headers first, then
        all tensors are read (a torn or corrupt file fails here), and only then copied into the
        live weights; any failure leaves the served weights untouched. Costs one extra copy of
        the weights in host memory during the load."""
        from safetensors import SafetensorError, safe_open

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise ArealError(f"update_weights_from_disk: {path!r} has no *.safetensors files")
        try:
            for file in files:
                with safe_open(str(file), framework="pt") as f:
                    for name in f.keys():
                        self.check_tensor(name, tuple(f.get_slice(name).get_shape()),
                                          self.layout.dtypes.get(name, torch.float32))
            staged = []
            for file in files:
                with safe_open(str(file), framework="pt") as f:
                    staged += self.stage((name, f.get_tensor(name)) for name in f.keys())
        except (SafetensorError, OSError) as exc:
            raise ArealError(f"update_weights_from_disk: cannot read {path!r}: {exc}") from None
        count = self.commit(staged)
        self.model_path = path
        return count


def _image_processor(model_path: str):
    """The image processor saved in a vision-language model's directory."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise ArealError(f"--model {model_path!r} is a vision-language model without a loadable image processor "
                         f"(preprocessor_config.json): {exc}") from None


def _eos_token_ids(model) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids

