"""The two numerical defects of issue 9, with its exact inputs, checked through autograd.

1. A group whose rewards are all equal gets advantage exactly 0 with std normalisation (sixteen
   rewards of 0.7 gave +0.0118, sixty-four of -19.9 gave +0.569 with a float32 one-pass mean).
2. A token outside the loss never puts NaN or inf in the gradient (the k3 KL term at
   log π_θ - log π_ref = -100 on a prompt token gave NaN), and a kept token with log-ratio +100
   gives a finite loss and gradient (exp(100) overflowed float32).
"""

import math

import pytest
import torch
from torch.testing import assert_close

from areal_core.api.types import Trajectory
from areal_core.data.batch import SequenceBatch
from areal_core.registry import build_registry
from areal_grpo import advantages as A
from areal_grpo import plugin
from areal_grpo.numerics import LOG_RATIO_BOUND
from areal_grpo.offpolicy import behaviour_weights

EQUAL_GROUPS = [(0.7, 16), (-19.9, 64)]  # (reward, group size) from the issue


@pytest.fixture(scope="module")
def registry():
    return build_registry(extra_plugins=[(plugin, "areal-grpo (under test)")], entry_points=False)


# -- 1. equal rewards -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reward,n", EQUAL_GROUPS)
@pytest.mark.parametrize("mean_level,leave_one_out,std_level", [
    ("group", False, "group"),  # grpo
    ("group", True, "group"),  # leave-one-out baseline with a std
    ("batch", False, "batch"),  # batch-level normalisation
    ("group", False, "batch"),  # lite_ppo
])
def test_equal_rewards_normalise_to_exactly_zero(reward, n, dtype, mean_level, leave_one_out, std_level):
    rewards = torch.full((n,), reward, dtype=dtype)
    out = A.normalize_rewards(rewards, torch.zeros(n, dtype=torch.long), mean_level=mean_level,
                              leave_one_out=leave_one_out, std_level=std_level, unbiased=True, eps=1e-5)
    assert out.dtype == dtype and torch.equal(out, torch.zeros(n, dtype=dtype)), out[:3]


@pytest.mark.parametrize("reward,n", EQUAL_GROUPS)
def test_equal_rewards_beside_other_groups(reward, n):
    """The equal group is 0 exactly; the other group is normalised as before (group and batch levels)."""
    rewards = torch.tensor([reward] * n + [1.0, 3.0])
    index = torch.tensor([0] * n + [1, 1])
    out = A.normalize_rewards(rewards, index, mean_level="group", leave_one_out=False, std_level="group",
                              unbiased=True, eps=1e-5)
    assert torch.equal(out[:n], torch.zeros(n))
    assert_close(out[n:], torch.tensor([-0.707107, 0.707107]))  # (1 - 2)/(sqrt(2) + eps), (3 - 2)/(sqrt(2) + eps)
    # lite_ppo: group mean (0 for the equal group), batch std (not 0: the batch's rewards differ)
    out = A.normalize_rewards(rewards, index, mean_level="group", leave_one_out=False, std_level="batch",
                              unbiased=True, eps=1e-5)
    assert torch.equal(out[:n], torch.zeros(n)) and out[n:].abs().min() > 0


@pytest.mark.parametrize("reward,n", EQUAL_GROUPS)
def test_whiten_equal_advantages_to_exactly_zero(reward, n):
    mask = torch.tensor([0.0, 1.0] * n)
    out = A.whiten(mask * reward, mask, unbiased=True, eps=1e-5)
    assert torch.equal(out, torch.zeros(2 * n))


def trajectories(rewards, group: str, prompt_len: int = 2, response_len: int = 3) -> list[Trajectory]:
    n = prompt_len + response_len
    mask = [0] * prompt_len + [1] * response_len
    return [Trajectory(list(range(3, 3 + n)), mask, [-1.0 * m for m in mask], [0 if m else -1 for m in mask], r,
                       group_id=group, sample_id=f"{group}{i}") for i, r in enumerate(rewards)]


@pytest.mark.parametrize("name,config", [("grpo", {}), ("rloo", {}), ("lite_ppo", {}), ("reinforce_pp", {})])
@pytest.mark.parametrize("reward,n", EQUAL_GROUPS)
def test_equal_group_gets_no_gradient_through_the_train_step_path(registry, name, config, reward, n):
    """From a batch built as the trainer builds it (float32 rewards) to d loss/d log π_θ by autograd.

    reinforce_pp has no group statistics but whitens over the batch: it runs on the equal group alone
    (``kl_reward_coef`` 0), so every loss token carries the same reward and whitening must give 0.
    """
    alone = name == "reinforce_pp"
    if alone:
        config = {**config, "kl_reward_coef": 0.0}
    trajs = trajectories([reward] * n, "equal") + ([] if alone else trajectories([0.0, 1.0, 0.25], "mixed"))
    batch = SequenceBatch.from_trajectories(trajs)
    algo = registry.create("algorithm", name, config)
    batch = SequenceBatch(batch.cu_seqlens, {**batch.tokens, "prox_logprobs": batch["logprobs"]}, batch.seqs)
    batch = algo.off_policy_corrections(algo.compute_advantages(batch), prox_version=0)
    equal_tokens = batch.seq_index < n
    assert torch.equal(batch["advantages"][equal_tokens], torch.zeros(int(equal_tokens.sum())))

    theta = (batch["logprobs"] + 0.1 * batch["loss_mask"]).requires_grad_(True)  # r = e^0.1 on every loss token
    loss, _ = algo.policy_loss_fn(theta, torch.zeros_like(theta), batch)
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.equal(grad[equal_tokens], torch.zeros(int(equal_tokens.sum())))
    if not alone:
        assert grad[~equal_tokens & (batch["loss_mask"] > 0)].abs().min() > 0


# -- 2. masked and extreme log-ratios ---------------------------------------------------------

def test_k3_on_a_masked_token_has_exactly_zero_gradient():
    # token 0 is masked with log π_θ - log π_ref = -100: exp(100) overflows float32
    logp = torch.tensor([-100.0, math.log(2.0), 100.0, -100.0], requires_grad=True)
    mask = torch.tensor([0.0, 1.0, 1.0, 1.0])
    kl = A.kl_estimate(logp, torch.zeros(4), "k3", mask=mask)
    (grad,) = torch.autograd.grad(torch.where(mask > 0, kl, 0.0).sum(), logp)
    # d/dd (e^-d - 1 + d) = 1 - e^-d. masked: exactly 0; d = ln 2: 1 - 1/2; d = +100: 1 - e^-100 = 1;
    # d = -100 (kept, beyond the bound -20): evaluated at -20, constant there, gradient 0
    assert grad.tolist() == [0.0, pytest.approx(0.5), 1.0, 0.0]
    bound = LOG_RATIO_BOUND
    assert_close(kl.detach(), torch.tensor([0.0, 0.5 - 1 + math.log(2.0), 99.0, math.exp(bound) - 1 - bound]))


def packed_micro_batch(algo, prompt_ref_gap: float, kept_log_ratio: float, advantage: float):
    """seq0 = [p, a, b], seq1 = [p, p, c, d, e]; π_θ = π_prox except on c (``kept_log_ratio``); on seq0's
    prompt token log π_θ - log π_ref = ``prompt_ref_gap``; A = ``advantage`` on every loss token."""
    mask = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1], dtype=torch.float32)
    prox = -mask
    theta = prox.clone()
    theta[0] = -3.0
    theta[5] += kept_log_ratio
    ref = theta.detach().clone()
    ref[0] = theta[0] - prompt_ref_gap
    tokens = {"input_ids": torch.arange(8) + 3, "loss_mask": mask, "logprobs": prox,
              "versions": torch.where(mask > 0, 0, -1), "ref_logprobs": ref, "advantages": advantage * mask}
    if algo.config.prox_logprobs != "loglinear":  # loglinear: π_prox comes from π_θ inside the loss
        tokens["prox_logprobs"] = prox
    seqs = {"rewards": torch.zeros(2), "group_index": torch.tensor([0, 0])}
    batch = SequenceBatch(torch.tensor([0, 3, 8]), tokens, seqs)
    return theta.requires_grad_(True), algo.off_policy_corrections(batch, prox_version=0)


@pytest.mark.parametrize("name,config", [
    ("grpo", {}), ("sapo", {}), ("gspo", {}), ("m2po", {}), ("dapo", {"max_response_tokens": 8}),
    ("grpo", {"prox_logprobs": "loglinear"}), ("grpo", {"behav_weight_mode": "cap"}),
    ("grpo", {"behav_weight_level": "sequence"}), ("grpo", {"dual_clip": 3.0}),
    ("grpo", {"loss_aggregation": "seq_mean"}),
])
@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_extreme_log_ratios_keep_loss_gradient_and_stats_finite(registry, name, config, advantage):
    algo = registry.create("algorithm", name, {**config, "kl_loss_coef": 0.1, "kl_loss_estimator": "k3"})
    theta, mb = packed_micro_batch(algo, prompt_ref_gap=-100.0, kept_log_ratio=100.0, advantage=advantage)
    loss, _ = algo.policy_loss_fn(theta, torch.zeros(8), mb)
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.isfinite(loss), loss
    assert torch.isfinite(grad).all(), grad
    assert grad[mb["loss_mask"] == 0].eq(0).all(), grad  # prompt tokens: exactly 0
    stats = algo.step_stats.result()
    assert all(math.isfinite(v) for v in stats.values()), stats


def test_kept_token_with_log_ratio_plus_100_under_the_clipped_loss(registry):
    """grpo, A = +1 everywhere, c's ratio e^100: the clip caps c at 1 + ε and gives it no gradient."""
    algo = registry.create("algorithm", "grpo", {"kl_loss_coef": 0.1})
    theta, mb = packed_micro_batch(algo, prompt_ref_gap=-100.0, kept_log_ratio=100.0, advantage=1.0)
    loss, _ = algo.policy_loss_fn(theta, torch.zeros(8), mb)
    (grad,) = torch.autograd.grad(loss, theta)
    # a, b, d, e: r = 1, token loss -1, k3 0, gradient -A·r + 0.1·(1 - e^0) = -1
    # c: -min(r·A, 1.2·A) = -1.2 with no gradient; its k3 vs ref (ref = θ there) is 0 with gradient 0.1·(1 - 1)
    # the prompt token's k3 (d = -100) is masked: nothing in the loss or the gradient
    assert_close(loss, torch.tensor(-1.0 * 4 - 1.2))
    assert_close(grad, torch.tensor([0, -1.0, -1.0, 0, 0, 0.0, -1.0, -1.0]))


def test_behaviour_weight_of_plus_100_is_bounded():
    prox = torch.tensor([0.0, 100.0, 0.0])
    behav = torch.zeros(3)
    mask = torch.tensor([1.0, 1.0, 0.0])
    w, keep = behaviour_weights(prox, behav, mask, torch.tensor([0, 0, 0]), 1, mode="cap", level="token",
                                lower=0.0, upper=5.0)
    assert w.tolist() == [1.0, 5.0, 1.0] and keep.tolist() == [True, True, False]
    w, keep = behaviour_weights(prox, behav, mask, torch.tensor([0, 0, 0]), 1, mode="mask", level="token",
                                lower=0.0, upper=5.0)
    assert torch.isfinite(w).all() and keep.tolist() == [True, False, False]


def test_segment_mean_ignores_an_inf_off_the_mask():
    from areal_grpo.segments import segment_mean

    x = torch.tensor([1.0, 3.0, float("inf"), 2.0], requires_grad=True)
    mean = segment_mean(x, torch.tensor([1, 1, 0, 1]), torch.tensor([0, 0, 0, 1]), 2)
    (grad,) = torch.autograd.grad(mean.sum(), x)
    assert mean.tolist() == [2.0, 2.0] and grad.tolist() == [0.5, 0.5, 0.0, 1.0]
