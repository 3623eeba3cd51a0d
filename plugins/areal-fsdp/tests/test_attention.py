"""areal_varlen_sdpa: length-bucketed batched SDPA equals causal SDPA run on each document alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from areal_fsdp.attention import bucket_layout, length_buckets, varlen_sdpa_attention


def test_length_buckets_group_by_power_of_two_longest_first():
    # ⌈log₂ L⌉: 1→0, 2→1, 3,4→2, 5..8→3, 9..16→4, 17→5; empty documents are dropped
    lengths = [1, 2, 3, 4, 5, 8, 9, 0, 16, 17]
    assert length_buckets(lengths) == [[9], [6, 8], [4, 5], [2, 3], [1], [0]]


@pytest.mark.parametrize("contexts", [None, [(0, 0), (0, 3), (0, 3), (0, 0), (10, 7)]])
def test_bucket_layout_round_trips_every_token_once(contexts):
    lengths = [3, 5, 2, 7, 4]
    layout, order = bucket_layout(lengths, torch.device("cpu"), contexts)
    flat = torch.cat([b.queries[b.valid] for b in layout])
    assert torch.equal(flat[order], torch.arange(sum(lengths)))
    assert all((b.mask is None) == torch.equal(b.keys, b.queries) for b in layout)


def test_context_keys_come_first_and_each_query_sees_its_context_and_own_past():
    # document 1 (rows 3..4) has rows 0..2 as context
    (with_context,) = [b for b in bucket_layout([3, 2], torch.device("cpu"), [(0, 0), (0, 3)])[0] if b.mask is not None]
    assert with_context.keys.tolist() == [[0, 1, 2, 3, 4]]
    assert with_context.mask[0, 0].tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


class _Module(torch.nn.Module):
    pass


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_matches_per_document_sdpa_values_and_gradients(kv_heads):
    g = torch.Generator().manual_seed(0)
    lengths = [5, 7, 1, 16, 3, 9, 12, 2, 6]  # several documents per bucket, so padding is exercised
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    total = int(cu[-1])
    q = torch.randn(1, 4, total, 8, generator=g, requires_grad=True)
    k = torch.randn(1, kv_heads, total, 8, generator=g, requires_grad=True)
    v = torch.randn(1, kv_heads, total, 8, generator=g, requires_grad=True)
    grad_out = torch.randn(1, total, 4, 8, generator=g)

    out, _ = varlen_sdpa_attention(_Module(), q, k, v, None, cu_seq_lens_q=cu)
    got = torch.autograd.grad(out, (q, k, v), grad_out)

    gqa = kv_heads != 4
    ref = torch.cat([F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=gqa)
                     for qs, ks, vs in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))], 2)
    ref = ref.transpose(1, 2)
    want = torch.autograd.grad(ref, (q, k, v), grad_out)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
