"""The fsdp engine on a tiny Qwen2.5-VL and Qwen3-VL with real PIL pictures: logprobs of packed image + text
sequences equal Hugging Face's forward of each sequence alone with its pixels, and a train step
with pixels changes the vision tower's weights (the gradient reaches it)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from areal_core.data.batch import SequenceBatch
from areal_core.testing.tiny import VL_ARCHS, make_tiny_model, random_picture, vision_prompt
from areal_core.testing.train_engine import mask_count, nll_loss
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine


@pytest.fixture(scope="module", params=VL_ARCHS)
def model_dir(request, tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("vl") / "m", arch=request.param))


@pytest.fixture(scope="module")
def batch(model_dir):
    """Three sequences (two pictures; one picture; text only), each prompt + a 5-token answer."""
    cases = [([random_picture(0), random_picture(1, (60, 120))], "Count them."),
             ([random_picture(2)], "How many shapes?"), ([], "No picture here.")]
    ids, masks, media = [], [], []
    for i, (pictures, text) in enumerate(cases):
        prompt, inputs = vision_prompt(model_dir, text, pictures)
        answer = [40 + i, 41, 42, 43, 44]
        ids.append(prompt + answer)
        masks.append([0] * len(prompt) + [1] * len(answer))
        media.append(inputs)
    cu = torch.tensor([0] + [len(x) for x in ids]).cumsum(0)
    return SequenceBatch(cu, {"input_ids": torch.tensor(sum(ids, [])),
                              "loss_mask": torch.tensor(sum(masks, []), dtype=torch.float32)}, multimodal=media)


def hf_logprobs(model_dir: str, batch: SequenceBatch) -> torch.Tensor:
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for i in range(batch.num_seqs):
            ids = batch["input_ids"][batch.cu_seqlens[i]:batch.cu_seqlens[i + 1]][None]
            logits = model(input_ids=ids, mm_token_type_ids=(ids == model.config.image_token_id).int(),
                           **batch.multimodal[i]).logits[0]
            seq = torch.zeros(ids.shape[1])
            seq[1:] = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            out.append(seq)
    return torch.cat(out)


@pytest.mark.parametrize("attn", ["varlen_sdpa", "sdpa"])
def test_packed_logprobs_with_pixels_equal_hf(model_dir, batch, attn):
    engine = FSDPEngine(FSDPEngineConfig(path=model_dir, attn_implementation=attn))
    engine.initialize()
    try:
        torch.testing.assert_close(engine.forward(batch), hf_logprobs(model_dir, batch), atol=1e-5, rtol=0)
        # one sequence per micro-batch (no packing) gives the same
        engine.config.max_tokens_per_mb = 1
        torch.testing.assert_close(engine.forward(batch), hf_logprobs(model_dir, batch), atol=1e-5, rtol=0)
    finally:
        engine.destroy()


def test_train_step_with_pixels_updates_the_vision_tower(model_dir, batch):
    engine = FSDPEngine(FSDPEngineConfig(path=model_dir))
    engine.initialize()
    try:
        def vision():
            return torch.cat([p.full_tensor().flatten().clone() for n, p in engine.model.named_parameters()
                              if "visual" in n])

        before = vision()
        stats = engine.train_batch(batch, nll_loss, mask_count)
        assert stats["grad_norm"] > 0
        assert not torch.equal(before, vision())
    finally:
        engine.destroy()
