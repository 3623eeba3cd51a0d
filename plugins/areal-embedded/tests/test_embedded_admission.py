"""Admission: a prefill batch is not padded far beyond its prompt tokens (PAD_LIMIT).

Interrupted requests come back with their partial output as the prompt, so one admission may see
prompts of 5 and of 300 tokens at once; padding them all to 300 multiplied the prefill work of an
asynchronous run about threefold (benchmarks/bench_async.py, docs/performance.md).
"""

from __future__ import annotations

import random

import torch

from areal_core.testing.inference_backend import make_served_model
from areal_embedded.runner import ModelRunner
from areal_embedded.scheduler import PAD_LIMIT, Scheduler, Sequence


def sequence(rid: str, prompt: list[int], results: dict) -> Sequence:
    return Sequence(rid, prompt, max_new_tokens=2, temperature=0.0, top_p=1.0, top_k=-1, stop_ids=frozenset(),
                    rng=random.Random(0), on_done=lambda r: results.__setitem__(rid, r))


def test_prompts_of_very_different_lengths_are_prefilled_apart_in_queue_order(tmp_path):
    runner = ModelRunner(str(make_served_model(tmp_path / "m")), max_rows=16, device="cpu", dtype="float32")
    scheduler = Scheduler(runner, max_batch=16, max_prefill_tokens=8192)
    calls: list[list[int]] = []
    prefill = runner.prefill
    runner.prefill = lambda prompts, *a, **k: calls.append([len(p) for p in prompts]) or prefill(prompts, *a, **k)
    lengths = {"long1": 300, "short1": 5, "short2": 6, "long2": 280, "short3": 7}
    results: dict = {}
    shared = list(range(3, 8))  # two samples of one prompt: one prefill row between them
    for rid, n in lengths.items():
        scheduler.waiting.append(sequence(rid, [1 + i % 50 for i in range(n)], results))
    scheduler.waiting.extend(sequence(f"n{i}", shared, results) for i in range(2))
    with torch.inference_mode():
        while scheduler.waiting or scheduler.running:
            scheduler._admit()
            if scheduler.running:
                scheduler._decode_step()
    assert calls[0] == [300, 280], "the oldest prompt first, with the later one of similar length"
    assert calls[1] == [5, 6, 7, 5], "then the short ones, in queue order, the shared prompt once"
    for batch in calls:
        assert len(batch) * max(batch) <= PAD_LIMIT * sum(batch)
    assert sorted(results) == sorted([*lengths, "n0", "n1"])
    assert all(r["meta_info"]["finish_reason"]["type"] == "length" for r in results.values())


def test_equal_prompts_from_separate_requests_share_one_prefill(tmp_path):
    """n requests of one prompt (separate lists, as n HTTP requests arrive) prefill it once, and each
    generates what the prompt alone generates."""
    runner = ModelRunner(str(make_served_model(tmp_path / "m")), max_rows=16, device="cpu", dtype="float32")
    scheduler = Scheduler(runner, max_batch=16, max_prefill_tokens=8192)
    calls: list[int] = []
    prefill = runner.prefill
    runner.prefill = lambda prompts, *a, **k: calls.append(len(prompts)) or prefill(prompts, *a, **k)
    results: dict = {}
    scheduler.waiting.extend(sequence(f"same{i}", [5, 9, 13, 2, 7], results) for i in range(4))
    scheduler.waiting.append(sequence("other", [5, 9, 13, 2], results))
    with torch.inference_mode():
        while scheduler.waiting or scheduler.running:
            scheduler._admit()
            if scheduler.running:
                scheduler._decode_step()
    assert calls == [2], "one prefill row for the four equal prompts, one for the other"
    alone: dict = {}
    scheduler.waiting.append(sequence("alone", [5, 9, 13, 2, 7], alone))
    with torch.inference_mode():
        while scheduler.waiting or scheduler.running:
            scheduler._admit()
            if scheduler.running:
                scheduler._decode_step()
    assert all(results[f"same{i}"]["output_ids"] == alone["alone"]["output_ids"] for i in range(4))
