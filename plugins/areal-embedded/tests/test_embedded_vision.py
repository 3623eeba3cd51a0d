"""The embedded server with a tiny Qwen2.5-VL and Qwen3-VL: greedy completions of image + text prompts equal
Hugging Face's (argmax of a full forward with the pixels per step), alone and batched with other
prompts; malformed or mismatched images are refused by name. Real PIL pictures, not placeholders."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from transformers import AutoModelForImageTextToText

from areal_core.api.types import ModelRequest, SamplingParams
from areal_core.multimodal import encode_image
from areal_core.testing.inference_backend import serving
from areal_core.testing.tiny import VL_ARCHS, make_tiny_model, random_picture, vision_prompt
from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

NEW_TOKENS = 6


@pytest.fixture(scope="module", params=VL_ARCHS)
def model_dir(request, tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("vl") / "m", arch=request.param))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=8, seed=0))
    with serving(backend, model_dir, tmp_path_factory.mktemp("log") / "server.log") as addr:
        yield backend, addr


def hf_greedy(model, ids: list[int], inputs: dict, n: int) -> list[int]:
    """n argmax tokens, each from a full forward over the prompt + tokens so far with the pixels."""
    out: list[int] = []
    image_token = model.config.image_token_id
    for _ in range(n):
        x = torch.tensor([ids + out])
        logits = model(input_ids=x, mm_token_type_ids=(x == image_token).int(), **inputs).logits
        out.append(int(logits[0, -1].argmax()))
    return out


def request(ids, pictures, rid):
    return ModelRequest(input_ids=ids, sampling=SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0,
                                                               ignore_eos=True),
                        rid=rid, image_data=[encode_image(p) for p in pictures])


def generate(server, reqs):
    backend, addr = server

    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(backend.generate(client, addr, r) for r in reqs))

    return asyncio.run(main())


def test_greedy_with_images_equals_hf(server, model_dir):
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    cases = [
        ([random_picture(0)], "How many shapes?"),
        ([random_picture(1, (60, 120)), random_picture(2)], "Count them."),
        ([], "No picture here."),
    ]
    prompts = [vision_prompt(model_dir, text, pics) for pics, text in cases]
    # concurrently: one batched prefill of image and text rows, then batched decode
    responses = generate(server, [request(ids, pics, f"r{i}") for i, ((ids, _), (pics, _)) in
                                  enumerate(zip(prompts, cases))])
    with torch.no_grad():
        for (ids, inputs), resp in zip(prompts, responses):
            assert resp.output_ids == hf_greedy(model, ids, inputs, NEW_TOKENS)


def test_bad_images_are_refused(server, model_dir):
    ids, _ = vision_prompt(model_dir, "How many?", [random_picture(0)])
    with pytest.raises(Exception, match="image_data\\[0\\]: not a base64-encoded image"):
        generate(server, [ModelRequest(input_ids=ids, image_data=["not an image"])])
    with pytest.raises(Exception, match="image tokens"):  # a picture of another size needs other tokens
        generate(server, [request(ids, [random_picture(0, (200, 200))], "x")])


def test_image_placeholders_are_never_sampled(model_dir):
    """A completion holding ``<|image_pad|>`` would have no picture behind it in the trainer's
    forward: the runner gives the placeholder tokens -inf logits on prefill and decode."""
    from areal_embedded.runner import ModelRunner

    runner = ModelRunner(model_dir, max_rows=2, device="cpu", dtype="float32")
    ids, inputs = vision_prompt(model_dir, "How many?", [random_picture(0)])
    logits, starts, offsets = runner.prefill([ids], 0, [inputs])
    assert offsets[0] != 0  # the picture's 3-D positions end below its token count
    blocked = [runner.model.config.image_token_id, runner.model.config.video_token_id]
    assert torch.isinf(logits[0, blocked]).all() and torch.isfinite(logits[0, :blocked[0]]).all()
    step = runner.decode(torch.tensor([int(logits[0].argmax())]), torch.tensor(starts), torch.tensor([len(ids)]),
                         torch.tensor(offsets))
    assert torch.isinf(step[0, blocked]).all()
