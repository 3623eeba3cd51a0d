"""Packed rows (several sequences per row under a block-diagonal causal mask) give the padded
layout's logprobs, loss and gradient norm; the packing itself never makes more or longer rows."""

import pytest
import torch

from _megatron_models import make_model
from areal_core.testing.engines import make_train_engine, run_context
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch
from areal_megatron import rows

pytestmark = pytest.mark.timeout(300)
LENGTHS = [7, 20, 4, 33, 12, 2, 9, 15]


def test_packing_fills_rows_of_the_longest_sequence():
    batch = random_batch(LENGTHS, seed=0)
    packed = rows.build(batch, tuple(range(len(LENGTHS))), torch.device("cpu"), pack=True)
    assert packed.ids.shape == (4, 33)  # 33 | 20+12 | 15+9+7+2 | 4  (first fit, longest first)
    assert sorted(n for _, _, n in packed.place) == sorted(LENGTHS)
    tokens = packed.select(packed.ids[..., None])[:, 0]
    assert torch.equal(tokens, batch["input_ids"])  # select() restores the micro-batch's token order
    pos = packed.positions()
    for row, offset, n in packed.place:
        assert torch.equal(pos[row, offset:offset + n], torch.arange(n))
        seen = ~packed.mask[row, 0, offset:offset + n]  # what each token of this sequence may attend to
        assert torch.equal(seen[:, offset:offset + n], torch.ones(n, n, dtype=torch.bool).tril())
        assert seen.sum() == n * (n + 1) // 2  # nothing outside its own sequence
    padded = rows.build(batch, tuple(range(len(LENGTHS))), torch.device("cpu"), pack=False)
    assert padded.ids.shape == (8, 33) and padded.mask is None


@pytest.mark.parametrize("arch", ["qwen2_tied", "qwen3_moe"])
def test_packed_equals_padded(tmp_path, arch):
    model_dir = make_model(tmp_path / arch, arch)
    results = {}
    for pack in (False, True):
        engine = make_train_engine("megatron", {"pack_sequences": pack, "max_tokens_per_mb": 80,
                                                "optimizer": {"lr": 1e-2}}, run_context(model_dir))
        try:
            before = engine.forward(random_batch(LENGTHS, seed=0))
            stats = engine.train_batch(random_batch(LENGTHS, seed=0), nll_loss, mask_count)
            results[pack] = (before, stats, engine.forward(random_batch(LENGTHS, seed=0)))
        finally:
            engine.destroy()
    (b0, s0, a0), (b1, s1, a1) = results[False], results[True]
    torch.testing.assert_close(b1, b0, atol=1e-5, rtol=0)
    assert s1["loss"] == pytest.approx(s0["loss"], abs=1e-5)
    assert s1["grad_norm"] == pytest.approx(s0["grad_norm"], rel=1e-4)
    torch.testing.assert_close(a1, a0, atol=1e-4, rtol=0)
