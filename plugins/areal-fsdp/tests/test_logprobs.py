"""Chunked logprob/entropy kernel, and packed micro-batches against unpacked forwards."""

import pytest
import torch

from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine
from areal_fsdp.logprobs import packed_logprobs_entropy, token_logprobs_entropy


def reference(logits, targets, temperature):
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(-1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("temperature,chunk", [(1.0, 3), (0.6, 4), (1.3, 100)])
def test_chunked_values_and_gradients_match_log_softmax(temperature, chunk):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 17, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, 17, (10,), generator=g)
    w_lp, w_ent = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)

    a = logits.clone().requires_grad_()
    lp, ent = token_logprobs_entropy(a, targets, temperature, chunk)
    ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
    b = logits.clone().requires_grad_()
    lp_ref, ent_ref = reference(b, targets, temperature)
    ((lp_ref * w_lp).sum() + (ent_ref * w_ent).sum()).backward()

    torch.testing.assert_close(lp, lp_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(ent, ent_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)


def test_packed_outputs_are_zero_at_sequence_starts():
    logits = torch.randn(6, 11)
    ids = torch.randint(0, 11, (6,))
    starts = torch.tensor([True, False, False, True, True, False])
    lp, ent = packed_logprobs_entropy(logits, ids, starts)
    assert torch.all(lp[starts] == 0) and torch.all(ent[starts] == 0)
    torch.testing.assert_close(lp[[1, 2, 5]], reference(logits[[0, 1, 4]], ids[[1, 2, 5]], 1.0)[0])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("model")))


def gradients_after_backward(model_path, batch, max_tokens):
    """Flat gradient of the global token-mean NLL, computed by the engine with this budget."""
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, max_tokens_per_mb=max_tokens))
    engine.initialize()
    captured = []
    clip = engine._clip_gradients

    def capture_then_clip():  # the gradients as train_batch accumulated them, before the step
        captured.append(torch.cat([p.grad.full_tensor().flatten() for p in engine.model.parameters()]))
        return clip()

    engine._clip_gradients = capture_then_clip
    try:
        stats = engine.train_batch(batch, nll_loss, mask_count)
    finally:
        engine.destroy()
    return stats, captured[0]


def test_packed_loss_and_gradients_equal_one_sequence_at_a_time(model_path):
    """Budget 1 puts every sequence in its own micro-batch (no packing); 1000 packs them all."""
    batch = random_batch([7, 20, 4, 33, 12, 2], seed=3)
    packed_stats, packed = gradients_after_backward(model_path, batch, 1000)
    single_stats, single = gradients_after_backward(model_path, batch, 1)
    assert packed_stats["n_micro_batches"] == 1 and single_stats["n_micro_batches"] == 6
    assert packed_stats["loss"] == pytest.approx(single_stats["loss"], abs=1e-6)
    torch.testing.assert_close(packed, single, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attn", ["varlen_sdpa", "sdpa", "eager"])
def test_packed_forward_isolates_documents_with_each_cpu_attention(model_path, attn):
    from areal_core.testing.train_engine import hf_logprobs

    batch = random_batch([7, 20, 4, 33], seed=4)
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, attn_implementation=attn))
    engine.initialize()
    try:
        torch.testing.assert_close(engine.forward(batch), hf_logprobs(model_path, batch), atol=1e-5, rtol=0)
    finally:
        engine.destroy()


def test_packing_leak_is_caught_at_initialize(model_path, monkeypatch):
    """Simulate a model that lets documents attend to each other (as a left-on KV cache does)."""
    from areal_core.errors import ArealError

    real_logits = FSDPEngine._logits

    def leaky_logits(self, mb):
        out = real_logits(self, mb)
        return out + 0.1 * out.cumsum(0) / (1 + torch.arange(out.shape[0]))[:, None]  # mixes earlier tokens in

    monkeypatch.setattr(FSDPEngine, "_logits", leaky_logits)
    with pytest.raises(ArealError, match="attend to each other"):
        FSDPEngine(FSDPEngineConfig(path=model_path)).initialize()
