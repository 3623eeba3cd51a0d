"""``vision_rlvr``: :mod:`rlvr <areal_core.rollout.rlvr>` with pictures in the prompt.

Episode for one dataset sample with images ``sample[image_field]`` (a list of base64 image-file
strings, or one; see :mod:`areal_core.multimodal`)::

    messages  = [{user: [{type: image}] * n_images + [{type: text, text: sample[prompt_field]}]}]
    text      = chat_template(messages)              one placeholder token per image
    inputs    = image_processor(images)              e.g. pixel_values, image_grid_thw
    input_ids = tokenize(text), the i-th placeholder repeated as many times as image i has tokens
    n requests(input_ids, image_data=images) -> completions -> rewards, as in rlvr
    -> n Trajectory whose multimodal_inputs = inputs (the train engine's forward gets them)

The image processor is the one saved in the model directory (``AutoImageProcessor``); the
placeholder token is ``image_token``. A sample's messages (``messages_field``) get the images
prepended to their first user message's content.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from areal_core.api.protocols import Reward
from areal_core.errors import ArealError
from areal_core.multimodal import decode_image, expand_image_tokens, image_inputs, image_token_counts
from areal_core.rollout.rlvr import RLVRConfig, RLVRWorkflow
from areal_core.rollout.sample_ids import sample_id_of


class VisionRLVRConfig(RLVRConfig):
    """Options of the ``vision_rlvr`` workflow (``workflow:`` section of the run config)."""

    image_field: str = Field("images", description="sample field holding the prompt's pictures: a list of base64 "
                                                    "image files (or data URLs), or one")
    image_token: str = Field("<|image_pad|>", description="the tokenizer's image placeholder token (Qwen2-VL family: "
                                                          "<|image_pad|>)")


class VisionRLVRWorkflow(RLVRWorkflow):
    """``factory(config, reward, tokenizer)``; the image processor is loaded from the tokenizer's
    directory (the model directory)."""

    def __init__(self, config: VisionRLVRConfig, reward: Reward, tokenizer):
        from transformers import AutoImageProcessor

        super().__init__(config, reward, tokenizer)
        self.vconfig = config
        source = getattr(tokenizer, "name_or_path", "")
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ArealError(f"vision_rlvr: no image processor in {source!r} (the model directory): {exc}") from None
        self.image_token_id = tokenizer.convert_tokens_to_ids(config.image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ArealError(f"vision_rlvr: the tokenizer has no token {config.image_token!r} (workflow.image_token)")

    def _images(self, sample: dict[str, Any]) -> list[str]:
        images = sample.get(self.vconfig.image_field)
        if images is None:
            raise ArealError(f"vision_rlvr: sample {sample_id_of(sample)!r} has no {self.vconfig.image_field!r} "
                             f"(workflow.image_field); its keys: {sorted(sample)}")
        return images if isinstance(images, list) else [images]

    def chat_messages(self, messages: list[dict[str, Any]], sample: dict[str, Any]) -> list[dict[str, Any]]:
        pictures = [{"type": "image"} for _ in self._images(sample)]
        out, placed = [], False
        for message in messages:
            if message.get("role") == "user" and not placed:
                content = message["content"]
                text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
                message, placed = {**message, "content": pictures + text}, True
            out.append(message)
        if not placed:
            raise ArealError(f"vision_rlvr: sample {sample_id_of(sample)!r} has no user message to put its images in")
        return out

    def encode_images(self, sample: dict[str, Any], input_ids: list[int]) -> tuple[list[int], list[str], dict[str, Any]]:
        images = self._images(sample)
        sid = sample_id_of(sample)
        pictures = [decode_image(d, f"vision_rlvr: sample {sid!r} {self.vconfig.image_field}[{i}]")
                    for i, d in enumerate(images)]
        inputs = image_inputs(self.image_processor, pictures)
        ids = expand_image_tokens(input_ids, self.image_token_id, image_token_counts(self.image_processor, inputs))
        return ids, list(images), inputs
