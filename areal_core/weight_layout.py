"""Weight names in memory vs in saved files, and attention a server must not misread.

transformers 5 may hold a model's weights in memory under other names and shapes than its
saved files use. Qwen3-MoE, for one, keeps each layer's experts fused::

    memory:  mlp.experts.gate_up_proj [E, 2I, H]      mlp.experts.down_proj [E, H, I]
    files:   mlp.experts.{e}.gate_proj.weight [I, H]  mlp.experts.{e}.up_proj.weight [I, H]
             mlp.experts.{e}.down_proj.weight [H, I]                       (e = 0..E-1)

areal's weight names are the files' names ("checkpoint names"): what ``export_hf`` writes,
what ``TrainEngine.named_full_weights`` yields, what a weight sync carries (SGLang and vLLM load
those names too) and what :func:`areal_core.checksum.tensors_checksum` is taken over.
:class:`CheckpointLayout` maps between the two with transformers' own conversion of that model
(``revert_weight_conversion``, what ``save_pretrained`` uses), one in-memory tensor at a time:

* ``to_checkpoint``: memory → files, exactly as ``save_pretrained`` would name and cut them;
* ``from_checkpoint``: files → memory. The conversions are pure data movement (renames,
  concatenation, stacking), so the layout converts ``arange(numel)`` the same way and scatters
  each file tensor back to the positions its indices name: exact, for any such conversion.

:func:`check_full_attention` refuses sliding-window models where attention is built as full
(a server's own masks, a packed varlen kernel) instead of silently serving them wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from areal_core.errors import ArealError

if TYPE_CHECKING:
    import torch


def _has_conversions(model: Any) -> bool:
    """Whether ``save_pretrained`` renames or reshapes any of ``model``'s weights (the test
    ``revert_weight_conversion`` itself makes before converting anything)."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions is None:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange

        conversions = [c for c in get_model_conversion_mapping(model, add_legacy=False)
                       if not isinstance(c, PrefixChange)]
    return bool(conversions)


def _revert(model: Any, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    from transformers.core_model_loading import revert_weight_conversion

    return dict(revert_weight_conversion(model, {name: tensor}))


class CheckpointLayout:
    """Where each in-memory tensor of a transformers model ``model`` lives in its saved files.

    Built from the model's structure only (meta tensors; no copy of the weights). ``shapes`` and
    ``dtypes`` describe every checkpoint tensor; ``owner`` names the in-memory tensor each one
    belongs to.
    """

    def __init__(self, model: Any):
        import torch

        self.model = model
        self.memory_shapes: dict[str, tuple[int, ...]] = {}
        self.pieces: dict[str, list[str]] = {}  # memory name -> its checkpoint names
        self.owner: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.converted: set[str] = set()  # memory names whose checkpoint form differs
        convert = _has_conversions(model)
        for name, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            self.memory_shapes[name] = shape
            meta = torch.empty(shape, dtype=tensor.dtype, device="meta")
            parts = _revert(model, name, meta) if convert else {name: meta}
            if list(parts) != [name] or tuple(parts[name].shape) != shape:
                self.converted.add(name)
            self.pieces[name] = list(parts)
            for piece, value in parts.items():
                if piece in self.owner:
                    raise ArealError(f"checkpoint weight {piece!r} comes from both {self.owner[piece]!r} and {name!r} "
                                     f"in {type(model).__name__}: areal cannot map this model's weights one tensor "
                                     "at a time")
                self.owner[piece] = name
                self.shapes[piece] = tuple(value.shape)
                self.dtypes[piece] = tensor.dtype

    def to_checkpoint(self, named: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """In-memory (name, tensor) pairs → checkpoint (name, tensor) pairs, in order."""
        for name, tensor in named:
            if name in self.converted:
                yield from _revert(self.model, name, tensor).items()
            else:
                yield name, tensor

    def from_checkpoint(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint tensors → in-memory tensors. Every in-memory tensor touched must get all of
        its pieces (ArealError naming the missing ones otherwise); unknown names are an error."""
        import torch

        unknown = [n for n in named if n not in self.owner]
        if unknown:
            raise ArealError(f"weights {unknown[:3]} are not checkpoint names of {type(self.model).__name__} "
                             f"(it has e.g. {sorted(self.owner)[:3]})")
        out: dict[str, torch.Tensor] = {}
        for memory in dict.fromkeys(self.owner[n] for n in named):
            if memory not in self.converted:
                out[memory] = named[memory]
                continue
            missing = [p for p in self.pieces[memory] if p not in named]
            if missing:
                raise ArealError(f"weight {memory!r} is stored as {len(self.pieces[memory])} checkpoint tensors; "
                                 f"{len(missing)} did not arrive (e.g. {missing[0]!r}): send all of them together")
            shape = self.memory_shapes[memory]
            index = torch.arange(int(torch.Size(shape).numel())).view(shape)
            first = named[self.pieces[memory][0]]
            flat = torch.empty(index.numel(), dtype=first.dtype, device=first.device)
            for piece, positions in _revert(self.model, memory, index).items():
                flat[positions.reshape(-1).to(flat.device)] = named[piece].reshape(-1).to(flat.dtype)
            out[memory] = flat.view(shape)
        return out


def checkpoint_named_parameters(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``model.named_parameters()`` under checkpoint names (what a weight sync sends)."""
    return CheckpointLayout(model).to_checkpoint(model.named_parameters())


def sliding_window_of(config: Any) -> int | None:
    """The attention window of a transformers config (its text config for a multimodal one), or
    None when every layer attends to the whole context."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        return window if "sliding_attention" in layer_types else None
    if getattr(text, "use_sliding_window", True) is False:
        return None
    return window


def check_full_attention(config: Any, who: str) -> None:
    """ArealError when the model attends through a sliding window: ``who`` (e.g. "the embedded
    server") builds full causal attention and would serve or train such a model wrongly."""
    window = sliding_window_of(config)
    if window is not None:
        kind = getattr(config, "model_type", "?")
        raise ArealError(f"{who} cannot run model_type {kind!r} with sliding-window attention (sliding_window="
                         f"{window}): it builds full causal attention, which would silently change the model. "
                         "Use a model without a window (for Qwen2/Qwen3: use_sliding_window=false in config.json), "
                         "or another engine/backend")
