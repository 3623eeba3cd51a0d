"""Decode attention by length group (areal_embedded.attention): the same logits as reading every
row up to the longest, which is what a forward of each sequence alone gives."""

from __future__ import annotations

import random

import torch
from transformers import AutoModelForCausalLM

from areal_core.testing.inference_backend import make_served_model
from areal_embedded import attention
from areal_embedded.runner import ModelRunner


def test_rows_are_grouped_by_power_of_two_length_with_short_rows_together():
    buckets = attention.slot_buckets([5, 300, 63, 64, 65, 129, 700, 40], torch.device("cpu"))
    assert [(b.rows.tolist(), b.kv_len) for b in buckets] == [
        ([0, 2, 7], 63), ([3, 4], 65), ([5], 129), ([1], 300), ([6], 700)]


def test_decode_of_rows_of_very_different_lengths_equals_each_sequence_alone(tmp_path):
    path = str(make_served_model(tmp_path / "m"))
    runner = ModelRunner(path, max_rows=8, device="cpu", dtype="float32")
    assert runner.attn_implementation == attention.NAME
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    rng = random.Random(0)
    lengths = [3, 40, 70, 150, 300, 9]  # four length groups, one of them of two rows
    sequences = [[rng.randrange(3, 60) for _ in range(n)] for n in lengths]
    # rows 0-1 prefilled together (left padding: row 0 starts at slot 37), the rest alone
    _, starts, _ = runner.prefill(sequences[:2], 0)
    for row in range(2, len(sequences)):
        starts += runner.prefill([sequences[row]], row)[1]
    ends = [s + n for s, n in zip(starts, lengths)]
    assert len(attention.slot_buckets([e + 1 for e in ends], runner.device)) == 4
    with torch.inference_mode():
        for _ in range(3):
            tokens = [rng.randrange(3, 60) for _ in sequences]
            logits = runner.decode(torch.tensor(tokens), torch.tensor(starts), torch.tensor(ends))
            for row, token in enumerate(tokens):
                sequences[row].append(token)
                alone = reference(input_ids=torch.tensor([sequences[row]])).logits[0, -1]
                torch.testing.assert_close(logits[row], alone, rtol=1e-4, atol=1e-4)
            ends = [e + 1 for e in ends]
