"""Images in requests and batches, model-agnostic.

Representation (the one areal uses everywhere a picture crosses a process or HTTP boundary):
an image is a **string holding the base64 of an encoded image file** (PNG, JPEG, anything PIL
reads), optionally as a data URL ``data:image/png;base64,...`` — what SGLang's ``image_data``
accepts. :func:`encode_image` writes one from a PIL image (PNG, lossless, so the server and the
trainer see the same pixels); :func:`decode_image` reads either form back.

Model inputs: a vision-language model's processor turns a sequence's images into tensors
("multimodal inputs", e.g. Qwen2.5-VL's ``pixel_values [n_patches, C·T·P·P]`` and
``image_grid_thw [n_images, 3]``). areal carries them per sequence as a ``dict[str, Tensor]``
whose tensors stack along dim 0 across images (:func:`concat_inputs` joins several sequences').
Which keys exist is the model's business: the train engine and the server pass them to the
model's forward as keyword arguments.

Rotary positions: models with multi-axis rotary embeddings (Qwen2-VL/2.5-VL "mrope") give
image tokens 3-D positions; :func:`rope_positions` asks the model itself (its
``get_rope_index``) for a sequence's ``[3, L]`` positions and the offset text tokens after the
prompt continue from.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from areal_core.errors import ArealError

DATA_URL_PREFIX = "data:image/"


def encode_image(image: Any) -> str:
    """A PIL image as the base64 of its PNG file (lossless)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: str, where: str = "image_data") -> Any:
    """An RGB PIL image from base64 (or a ``data:image/...;base64,`` URL); ArealError naming
    ``where`` when it is not one."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str) or not data:
        raise ArealError(f"{where}: expected a base64 image string, got {type(data).__name__}")
    if data.startswith(DATA_URL_PREFIX):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise ArealError(f"{where}: not a base64-encoded image file ({exc})") from None
    return image.convert("RGB")


def concat_inputs(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The multimodal inputs of several sequences, in order, as one dict (tensors concatenated
    along dim 0); sequences without inputs contribute nothing. ``{}`` when none has any."""
    import torch

    present = [d for d in inputs if d]
    if not present:
        return {}
    keys = present[0].keys()
    for d in present:
        if d.keys() != keys:
            raise ArealError(f"multimodal inputs disagree on their keys: {sorted(keys)} vs {sorted(d)}")
    return {k: torch.cat([torch.as_tensor(d[k]) for d in present]) for k in keys}


def image_inputs(image_processor: Any, images: list[Any]) -> dict[str, Any]:
    """The model inputs of ``images`` (PIL) from a transformers image processor, as CPU tensors."""
    out = image_processor(images=images, return_tensors="pt")
    return {k: v for k, v in out.items()}


def image_token_counts(image_processor: Any, inputs: dict[str, Any]) -> list[int]:
    """Placeholder tokens each image takes in the prompt, for processors that report a patch grid
    (``image_grid_thw``) merged ``merge_size``² patches to a token (Qwen2-VL / 2.5-VL / 3-VL)."""
    grid = inputs.get("image_grid_thw")
    merge = getattr(image_processor, "merge_size", None)
    if grid is None or merge is None:
        raise ArealError(f"image processor {type(image_processor).__name__} reports no image_grid_thw / merge_size: "
                         "areal cannot tell how many tokens its images take")
    return [int(n) // (merge * merge) for n in grid.prod(-1).tolist()]


def expand_image_tokens(input_ids: list[int], image_token_id: int, counts: list[int]) -> list[int]:
    """``input_ids`` with its i-th ``image_token_id`` repeated ``counts[i]`` times (what a
    processor does to the one placeholder per image that a chat template writes)."""
    found = input_ids.count(image_token_id)
    if found != len(counts):
        raise ArealError(f"the prompt has {found} image placeholder tokens (id {image_token_id}) "
                         f"for {len(counts)} images")
    out: list[int] = []
    images = iter(counts)
    for token in input_ids:
        out.extend([token] * next(images) if token == image_token_id else [token])
    return out


def uses_rope_index(model: Any) -> bool:
    """Whether ``model`` (a transformers model, possibly wrapped) computes multi-axis rotary
    positions for image tokens (it has a ``get_rope_index``)."""
    return _rope_owner(model) is not None


def rope_positions(model: Any, input_ids: Any, inputs: dict[str, Any]) -> tuple[Any, int]:
    """``(positions [3, L] long, offset)`` for one sequence ``input_ids [L]`` with its multimodal
    ``inputs``: the model's own ``get_rope_index``. A text token at index ``i >= L`` (generated
    later) has position ``i + offset`` on every axis. Text-only: ``arange(L)`` ×3 and 0."""
    import torch

    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
    owner = _rope_owner(model)
    grid = inputs.get("image_grid_thw")
    if owner is None or grid is None:
        return torch.arange(ids.shape[1]).expand(3, -1).clone(), 0
    config = owner.config
    token_types = (ids == config.image_token_id).int()
    grid = torch.as_tensor(grid, dtype=torch.long)
    merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", 1)
    expected, found = int((grid.prod(-1) // (merge * merge)).sum()), int(token_types.sum())
    if found != expected:
        raise ArealError(f"a sequence holds {found} image tokens (id {config.image_token_id}) but its images "
                         f"{grid.tolist()} take {expected}: was an image token generated?")
    positions, deltas = owner.get_rope_index(ids, mm_token_type_ids=token_types,
                                             image_grid_thw=grid)
    return positions[:, 0].cpu(), int(deltas.reshape(-1)[0])


def _rope_owner(model: Any) -> Any:
    """The submodule that defines ``get_rope_index`` (transformers keeps it on ``model.model``)."""
    for candidate in (model, getattr(model, "model", None), getattr(getattr(model, "base_model", None), "model", None)):
        if candidate is not None and callable(getattr(candidate, "get_rope_index", None)):
            return candidate
        inner = getattr(candidate, "model", None) if candidate is not None else None
        if inner is not None and callable(getattr(inner, "get_rope_index", None)):
            return inner
    return None
