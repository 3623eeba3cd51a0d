"""``distill``: the reverse-KL term against hand-computed values, its gradient, and the teacher check."""

from __future__ import annotations

import pytest
import torch

from areal_core.data.batch import SequenceBatch
from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_grpo.distill import DistillAlgorithm, DistillConfig


def micro_batch():
    """Two sequences (lengths 3 and 2); the first token of each is prompt."""
    return SequenceBatch(torch.tensor([0, 3, 5]), {
        "input_ids": torch.zeros(5, dtype=torch.long),
        "loss_mask": torch.tensor([0.0, 1, 1, 0, 1]),
        "update_mask": torch.tensor([0.0, 1, 1, 0, 1]),
        "logprobs": torch.tensor([0.0, -1.0, -2.0, 0.0, -0.5]),       # behaviour
        "prox_logprobs": torch.tensor([0.0, -1.0, -2.0, 0.0, -0.5]),
        "behav_weights": torch.tensor([1.0, 1.0, 0.5, 1.0, 2.0]),
        "ref_logprobs": torch.tensor([-9.0, -1.5, -1.0, -9.0, -0.5]),  # the teacher
        "advantages": torch.tensor([0.0, 1.0, 1.0, 0.0, -1.0]),
    })


def test_pure_distillation_loss_and_gradient_by_hand():
    algo = DistillAlgorithm(DistillConfig(name="distill", rl_coef=0.0, distill_coef=2.0))
    logprobs = torch.tensor([0.0, -1.0, -2.0, 0.0, -0.5], requires_grad=True)  # π_θ = π_prox: ratio 1
    loss, _ = algo.policy_loss_fn(logprobs, torch.zeros(5), micro_batch())
    gaps = [-1.0 - -1.5, -2.0 - -1.0, -0.5 - -0.5]  # d = log π_θ − log π_T on the update tokens
    weights = [1.0, 0.5, 2.0]
    assert float(loss.detach()) == pytest.approx(2.0 * sum(w * d for w, d in zip(weights, gaps)))
    loss.backward()
    # ∂/∂ log π_θ = coef · w · d (the ratio's gradient, the gap held fixed); prompt tokens get 0
    assert logprobs.grad.tolist() == pytest.approx([0.0, 2 * 1.0 * 0.5, 2 * 0.5 * -1.0, 0.0, 0.0])
    assert algo.step_stats.result()["distill/reverse_kl"] == pytest.approx(sum(gaps) / 3)


def test_rl_term_is_added_with_its_weight():
    logprobs = torch.tensor([0.0, -1.0, -2.0, 0.0, -0.5])
    both = DistillAlgorithm(DistillConfig(name="distill", rl_coef=0.5, distill_coef=1.0))
    distill_only = DistillAlgorithm(DistillConfig(name="distill", rl_coef=0.0, distill_coef=1.0))
    rl_only = DistillAlgorithm(DistillConfig(name="distill", rl_coef=1.0, distill_coef=0.0))
    parts = [float(a.policy_loss_fn(logprobs, torch.zeros(5), micro_batch())[0]) for a in (both, distill_only, rl_only)]
    assert parts[0] == pytest.approx(parts[1] + 0.5 * parts[2])
    assert parts[2] != 0.0


def test_without_a_teacher_engine_it_says_where_to_put_it():
    algo = DistillAlgorithm(DistillConfig(name="distill"))
    with pytest.raises(ArealError, match="distills from the `ref:` engine"):
        algo.train_step(micro_batch(), actor=None, ref=None)


def test_registered_by_name():
    registry = build_registry()
    assert "distill" in registry.names("algorithm")
    assert isinstance(registry.create("algorithm", "distill", {"rl_coef": 0.0}), DistillAlgorithm)
