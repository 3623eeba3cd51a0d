"""Shared-prefix packing: a group's common prompt stored once gives the logprobs, entropies,
values and gradients of every sequence packed in full."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from areal_core.plugin import SequenceBatch
from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import mask_count, nll_loss
from areal_fsdp.attention import varlen_sdpa_attention
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine
from areal_fsdp.prefix import shared_prefixes, sharing_units, tree_row


def grouped_batch(groups: list[tuple[int, list[int]]], vocab: int = 500, seed: int = 0) -> SequenceBatch:
    """``groups``: (prompt length, completion lengths) per group; each group's sequences repeat
    its random prompt, then random completions (``loss_mask`` 1 on completions only)."""
    g = torch.Generator().manual_seed(seed)
    seqs, masks, group_index = [], [], []
    for k, (prompt_len, completions) in enumerate(groups):
        prompt = torch.randint(0, vocab, (prompt_len,), generator=g)
        for n in completions:
            seqs.append(torch.cat([prompt, torch.randint(0, vocab, (n,), generator=g)]))
            masks.append(torch.cat([torch.zeros(prompt_len), torch.ones(n)]))
            group_index.append(k)
    cu = torch.zeros(len(seqs) + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(torch.tensor([len(s) for s in seqs]), 0)
    return SequenceBatch(cu, {"input_ids": torch.cat(seqs), "loss_mask": torch.cat(masks)},
                         {"rewards": torch.zeros(len(seqs)), "group_index": torch.tensor(group_index)})


def test_groups_share_their_longest_common_prefix_capped_below_the_shortest():
    batch = SequenceBatch(torch.tensor([0, 4, 8, 10, 13, 16]),
                          {"input_ids": torch.tensor([1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 7, 8, 9, 7, 8, 6])},
                          {"group_index": torch.tensor([0, 0, 0, 1, 1])})
    # group 0: [1,2,3,4], [1,2,3,5], [1,2] share [1,2] but the last has only 2 tokens -> P = 1;
    # group 1: [7,8,9], [7,8,6] share [7,8] -> P = 2
    assert shared_prefixes(batch) == [([0, 1, 2], 1), ([3, 4], 2)]
    units, sizes = sharing_units(batch, 100)
    assert units == [[0, 1, 2], [3, 4]] and sizes == [4 + 4 + 2 - 2, 3 + 3 - 2]
    # a budget of 7 cuts group 0 after its second sequence (4 + 3 = 7; + 1 more would be 8)
    assert sharing_units(batch, 7) == ([[0, 1], [2], [3, 4]], [7, 2, 4])
    no_groups = SequenceBatch(batch.cu_seqlens, batch.tokens, {})
    assert shared_prefixes(no_groups) == [([i], 0) for i in range(5)]


def test_a_group_without_a_common_first_token_is_not_shared():
    batch = SequenceBatch(torch.tensor([0, 3, 6]), {"input_ids": torch.tensor([1, 2, 3, 4, 2, 3])},
                          {"group_index": torch.tensor([0, 0])})
    assert shared_prefixes(batch) == [([0], 0), ([1], 0)]
    assert tree_row(batch) is None


def test_tree_row_layout():
    # sequences [5,6,7,8] and [5,6,9] share [5,6]; [4,4] is alone
    batch = SequenceBatch(torch.tensor([0, 4, 6, 9]), {"input_ids": torch.tensor([5, 6, 7, 8, 4, 4, 5, 6, 9])},
                          {"group_index": torch.tensor([0, 1, 0])})
    row = tree_row(batch)
    assert row.input_ids.tolist() == [5, 6, 7, 8, 9, 4, 4]
    assert row.position_ids.tolist() == [0, 1, 2, 3, 2, 0, 1]
    assert row.doc_lens == [2, 2, 1, 2] and row.contexts == [(0, 0), (0, 2), (0, 2), (0, 0)]
    assert row.parents.tolist() == [-1, 0, 1, 2, 1, -1, 5]
    assert row.gather.tolist() == [0, 1, 2, 3, 5, 6, 0, 1, 4]
    assert torch.equal(row.input_ids[row.gather], batch["input_ids"])


class _Module(torch.nn.Module):
    pass


def test_attention_with_context_equals_each_sequence_alone():
    """A suffix document attending to its prefix's context = the whole sequence under causal SDPA."""
    g = torch.Generator().manual_seed(0)
    prefix_len, suffixes = 6, [3, 1, 9, 4]  # two suffix buckets
    total = prefix_len + sum(suffixes)
    q, k, v = (torch.randn(1, h, total, 8, generator=g, requires_grad=True) for h in (4, 2, 2))
    grad_out = torch.randn(1, total, 4, 8, generator=g)
    cu = torch.tensor([0, prefix_len] + [prefix_len + s for s in torch.tensor(suffixes).cumsum(0).tolist()])
    out, _ = varlen_sdpa_attention(_Module(), q, k, v, None, cu_seq_lens_q=cu,
                                   areal_context=[(0, 0)] + [(0, prefix_len)] * len(suffixes))
    got = torch.autograd.grad(out, (q, k, v), grad_out)

    # reference: each full sequence (prefix copy + its suffix) alone; the prefix rows of the
    # output come from the first sequence, the prefix gradients are the sum over all copies
    rows, start = [], prefix_len
    for s in suffixes:
        rows.append(torch.cat([torch.arange(prefix_len), torch.arange(start, start + s)]))
        start += s
    ref_out = torch.zeros(1, total, 4, 8)
    ref = [torch.zeros_like(x) for x in (q, k, v)]
    for i, idx in enumerate(rows):
        qs, ks, vs = (x[:, :, idx].detach().requires_grad_() for x in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True).transpose(1, 2)
        own = idx[prefix_len:] if i else idx
        ref_out[0, own] = o[0, -len(own):].detach()
        upstream = torch.zeros_like(o)
        upstream[0, -len(own):] = grad_out[0, own]
        for acc, gx in zip(ref, torch.autograd.grad(o, (qs, ks, vs), upstream)):
            acc[:, :, idx] += gx
    torch.testing.assert_close(out.detach(), ref_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("model")))


BATCH = [(9, [3, 1, 5, 2]), (4, [6, 6]), (12, [2]), (7, [1, 4, 3, 8, 2, 2])]


def run_engine(model_path, batch, sharing, max_tokens=10_000, **overrides):
    """(forward logprobs, train stats, flat gradient before the step) of one fresh engine."""
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, max_tokens_per_mb=max_tokens, prefix_sharing=sharing,
                                         **overrides))
    engine.initialize()
    captured = []
    clip = engine._clip_gradients

    def capture_then_clip():
        captured.append(torch.cat([p.grad.full_tensor().flatten() for p in engine.model.parameters()]))
        return clip()

    engine._clip_gradients = capture_then_clip
    try:
        values = engine.forward(batch, temperature=0.7)
        stats = engine.train_batch(batch, nll_loss, mask_count)
    finally:
        engine.destroy()
    return values, stats, captured[0]


@pytest.mark.parametrize("max_tokens", [10_000, 30, 12])  # one micro-batch; several; groups cut to fit
def test_engine_forward_and_gradients_equal_unshared(model_path, max_tokens):
    batch = grouped_batch(BATCH, seed=1)
    lp, stats, grad = run_engine(model_path, batch, True, max_tokens)
    lp_ref, stats_ref, grad_ref = run_engine(model_path, batch, False, max_tokens)
    torch.testing.assert_close(lp, lp_ref, atol=1e-5, rtol=1e-5)
    assert stats["loss"] == pytest.approx(stats_ref["loss"], abs=1e-5)
    assert stats["entropy"] == pytest.approx(stats_ref["entropy"], abs=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-4)


def test_sharing_stores_fewer_tokens_and_keeps_groups_in_one_micro_batch(model_path):
    batch = grouped_batch(BATCH, seed=2)
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, max_tokens_per_mb=30))
    engine.initialize()
    try:
        micro_batches = engine._my_micro_batches(batch)
    finally:
        engine.destroy()
    groups = batch["group_index"].tolist()
    for mb in micro_batches:  # a group that fits the budget is never split
        assert all(sum(groups[i] == g for i in mb) == groups.count(g) for g in {groups[i] for i in mb})
        assert tree_row(batch.select(mb)) is None or tree_row(batch.select(mb)).input_ids.numel() <= 30
    rows = sum(tree_row(batch.select(mb)).input_ids.numel() for mb in micro_batches if len(mb) > 1)
    rows += sum(batch.select(mb).num_tokens for mb in micro_batches if len(mb) == 1)
    assert rows == sum(p + sum(c) for p, c in BATCH) < batch.num_tokens


def test_critic_values_equal_unshared(model_path):
    batch = grouped_batch(BATCH, seed=3)

    def values(sharing):
        engine = FSDPEngine(FSDPEngineConfig(path=model_path, critic=True, prefix_sharing=sharing))
        engine.initialize()
        try:
            return engine.forward(batch)
        finally:
            engine.destroy()

    torch.testing.assert_close(values(True), values(False), atol=1e-5, rtol=1e-5)


def test_prefix_sharing_with_another_attention_is_refused():
    with pytest.raises(ValidationError, match="prefix_sharing needs attn_implementation varlen_sdpa.*'sdpa'"):
        FSDPEngineConfig(attn_implementation="sdpa", prefix_sharing=True)
    FSDPEngineConfig(attn_implementation="sdpa")  # the default (on) is no error: it applies to varlen_sdpa only
