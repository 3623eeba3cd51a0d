"""The advantage pipeline against values worked out by hand (arithmetic beside each value).

Most tests use BATCH: five sequences packed end to end (19 tokens), two prompt groups of unequal
size, unequal lengths, prompt tokens masked out of the loss.
"""

import pytest
import torch
from torch.testing import assert_close

from areal_core.data.batch import SequenceBatch
from areal_core.registry import build_registry
from areal_grpo import advantages as A
from areal_grpo import plugin

# (group, loss mask, reward)
SEQS = [
    (0, [0, 0, 1, 1], 2.0),  # seq0: prompt 2, response 2
    (0, [0, 0, 1], 0.0),  # seq1: prompt 2, response 1
    (0, [0, 1, 1, 1], 1.0),  # seq2: prompt 1, response 3
    (1, [0, 1, 1], 3.0),  # seq3: prompt 1, response 2
    (1, [0, 0, 1, 1, 1], 1.0),  # seq4: prompt 2, response 3
]


def packed(seqs, **token_fields) -> SequenceBatch:
    lens = torch.tensor([len(m) for _, m, _ in seqs])
    cu = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lens, 0)])
    mask = torch.tensor([x for _, m, _ in seqs for x in m], dtype=torch.float32)
    tokens = {"input_ids": torch.arange(int(cu[-1])) + 3, "loss_mask": mask, "logprobs": -mask,
              "versions": torch.where(mask > 0, 0, -1)}
    tokens.update({k: torch.tensor(v, dtype=torch.float32) for k, v in token_fields.items()})
    seqs_fields = {"rewards": torch.tensor([r for _, _, r in seqs]),
                   "group_index": torch.tensor([g for g, _, _ in seqs])}
    return SequenceBatch(cu, tokens, seqs_fields)


def per_token(batch: SequenceBatch, seq_values: list[float]) -> torch.Tensor:
    """A sequence-level value on every loss token of its sequence, 0 elsewhere."""
    return torch.tensor(seq_values)[batch.seq_index] * batch["loss_mask"]


@pytest.fixture(scope="module")
def registry():
    return build_registry(extra_plugins=[(plugin, "areal-grpo (under test)")], entry_points=False)


def advantages_of(registry, name: str, batch: SequenceBatch, **config) -> torch.Tensor:
    algo = registry.create("algorithm", name, config)
    return algo.compute_advantages(batch)["advantages"]


# -- the presets ------------------------------------------------------------------------------

def test_grpo_group_mean_and_std(registry):
    batch = packed(SEQS)
    # group 0 rewards [2, 0, 1]: mean 1, std sqrt(((2-1)² + (0-1)² + (1-1)²)/2) = 1
    #   -> (r - 1)/(1 + 1e-5) = [1, -1, 0]
    # group 1 rewards [3, 1]: mean 2, std sqrt((1 + 1)/1) = 1.414214 -> [0.707107, -0.707107]
    expected = per_token(batch, [1.0, -1.0, 0.0, 0.707107, -0.707107])
    assert_close(advantages_of(registry, "grpo", batch), expected, atol=1e-4, rtol=0)


def test_dr_grpo_group_mean_without_std(registry):
    batch = packed(SEQS)
    # group means 1 and 2: [2-1, 0-1, 1-1, 3-2, 1-2]
    expected = per_token(batch, [1.0, -1.0, 0.0, 1.0, -1.0])
    assert_close(advantages_of(registry, "dr_grpo", batch), expected)


def test_lite_ppo_group_mean_batch_std(registry):
    batch = packed(SEQS)
    # centred by group means: [1, -1, 0, 1, -1]
    # batch std of [2, 0, 1, 3, 1]: mean 1.4, squared deviations .36 + 1.96 + .16 + 2.56 + .16 = 5.2,
    #   5.2/4 = 1.3, sqrt 1.140175 -> 1/1.140175 = 0.877058
    expected = per_token(batch, [0.877058, -0.877058, 0.0, 0.877058, -0.877058])
    assert_close(advantages_of(registry, "lite_ppo", batch), expected, atol=1e-4, rtol=0)


def test_rloo_leave_one_out_baseline(registry):
    batch = packed(SEQS)
    # group 0: 2 - (0+1)/2 = 1.5, 0 - (2+1)/2 = -1.5, 1 - (2+0)/2 = 0
    # group 1: 3 - 1 = 2, 1 - 3 = -2
    expected = per_token(batch, [1.5, -1.5, 0.0, 2.0, -2.0])
    assert_close(advantages_of(registry, "rloo", batch), expected)


def test_reinforce_pp_kl_reward_then_batch_whitening(registry):
    seqs = [(0, [0, 1, 1], 1.0), (1, [0, 1], 0.0)]
    # k1 = log π_prox - log π_ref on loss tokens: seq0 [-1 - (-11), -12 - (-2)] = [10, -10], seq1 [-1 - (-21)] = [20]
    batch = packed(seqs, prox_logprobs=[0, -1, -12, 0, -1], ref_logprobs=[0, -11, -2, 0, -21])
    # KL rewards -0.01·k1: seq0 [-0.1, +0.1], seq1 [-0.2]; rewards on last tokens: seq0 +1, seq1 +0
    # reward-to-go (γ = λ = 1): seq0 [-0.1 + 0.1 + 1, 0.1 + 1] = [1.0, 1.1], seq1 [-0.2]
    # whiten [1.0, 1.1, -0.2]: mean 0.633333, squared deviations .134444 + .217778 + .694444 = 1.046667,
    #   /2 = .523333, std .723418 -> [.366667, .466667, -.833333]/.723418
    expected = torch.tensor([0, 0.506857, 0.645091, 0, -1.151948])
    assert_close(advantages_of(registry, "reinforce_pp", batch), expected, atol=1e-4, rtol=0)


def test_ppo_gae_with_critic_values_then_whitening(registry):
    seqs = [(0, [0, 1, 1], 1.0), (0, [0, 1], 0.0)]
    batch = packed(seqs, values=[0, 0.5, 0.8, 0, 0.2])
    # γ = 1, λ = 0.95. seq0: t2 δ = 1 - 0.8 = 0.2, A = 0.2; t1 δ = 0.8 - 0.5 = 0.3, A = 0.3 + 0.95·0.2 = 0.49
    # seq1: t1 δ = 0 - 0.2 = -0.2, A = -0.2
    # whiten [0.49, 0.2, -0.2]: mean 0.163333, squared deviations .106711 + .001344 + .132011 = .240067,
    #   /2 = .120033, std .346458 -> [.326667, .036667, -.363333]/.346458
    algo = registry.create("algorithm", "ppo", {})
    out = algo.compute_advantages(batch)
    assert_close(out["advantages"], torch.tensor([0, 0.942874, 0.105832, 0, -1.048706]), atol=1e-4, rtol=0)
    # returns R = A + V before whitening: [0.49 + 0.5, 0.2 + 0.8, -0.2 + 0.2]
    assert_close(out["returns"], torch.tensor([0, 0.99, 1.0, 0, 0.0]))


def test_dapo_overlong_penalty_then_group_norm(registry):
    batch = packed(SEQS)
    # L_max 4, buffer 0.5·4 = 2: lengths [2, 1, 3, 2, 3] over 4 - 2 = 2 lose (L - 2)/2 -> [0, 0, .5, 0, .5]
    # rewards [2, 0, 0.5 | 3, 0.5]
    # group 0: mean .833333, squared deviations 1.361111 + .694444 + .111111 = 2.166667, /2 -> std 1.040833
    #   -> [1.166667, -.833333, -.333333]/1.040833 = [1.120897, -.800641, -.320256]
    # group 1: mean 1.75, std sqrt(2·1.25²/1) = 1.767767 -> [.707107, -.707107]
    expected = per_token(batch, [1.120897, -0.800641, -0.320256, 0.707107, -0.707107])
    got = advantages_of(registry, "dapo", batch, max_response_tokens=4, overlong_buffer_ratio=0.5)
    assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["gspo", "sapo", "m2po"])
def test_presets_with_grpo_advantages(registry, name):
    batch = packed(SEQS)
    # same group mean/std normalisation as test_grpo_group_mean_and_std
    expected = per_token(batch, [1.0, -1.0, 0.0, 0.707107, -0.707107])
    assert_close(advantages_of(registry, name, batch), expected, atol=1e-4, rtol=0)


# -- the steps --------------------------------------------------------------------------------

def test_overlong_penalty():
    lengths = torch.tensor([5.0, 6.0, 8.0, 10.0, 12.0])
    # L_max 10, buffer 0.4·10 = 4 -> threshold 6: [0, 0, -(8-6)/4, -(10-6)/4, clamp(-(12-6)/4) = -1], times 2
    assert_close(A.overlong_penalty(lengths, 10, 0.4, 2.0), torch.tensor([0.0, 0.0, -1.0, -2.0, -2.0]))
    assert_close(A.overlong_penalty(lengths, 10, 0.0, 2.0), torch.zeros(5))


def test_shape_rewards():
    # ((r + 0.5)·2) = [1, 3, -9] clipped to ±2
    assert_close(A.shape_rewards(torch.tensor([0.0, 1.0, -5.0]), 0.5, 2.0, 2.0), torch.tensor([1.0, 2.0, -2.0]))


def test_normalize_rewards_batch_level_and_singletons():
    r = torch.tensor([1.0, 3.0, 5.0])
    g = torch.tensor([0, 0, 1])
    # batch: mean 3, std sqrt((4 + 0 + 4)/2) = 2 -> [-1, 0, 1]
    out = A.normalize_rewards(r, g, mean_level="batch", leave_one_out=False, std_level="batch", unbiased=True, eps=0.0)
    assert_close(out, torch.tensor([-1.0, 0.0, 1.0]))
    # group, biased std: group 0 mean 2, std sqrt((1 + 1)/2) = 1 -> [-1, 1]; group 1 alone: 5 - 5 = 0, std 0 -> 0/eps
    out = A.normalize_rewards(r, g, mean_level="group", leave_one_out=False, std_level="group", unbiased=False,
                              eps=1e-5)
    assert_close(out, torch.tensor([-1.0, 1.0, 0.0]), atol=1e-4, rtol=0)
    # leave-one-out: 1 - 3 = -2, 3 - 1 = 2; a member alone is its own baseline: 0
    out = A.normalize_rewards(r, g, mean_level="group", leave_one_out=True, std_level="none", unbiased=True, eps=1e-5)
    assert_close(out, torch.tensor([-2.0, 2.0, 0.0]))


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.0 - 0.693147, -2.0])  # d = [ln 2, 0]
    assert_close(A.kl_estimate(logp, ref, "k1"), torch.tensor([0.693147, 0.0]))
    assert_close(A.kl_estimate(logp, ref, "k2"), torch.tensor([0.240227, 0.0]))  # ½·0.693147²
    assert_close(A.kl_estimate(logp, ref, "k3"), torch.tensor([0.193147, 0.0]))  # e^-ln2 - 1 + ln2 = .5 - 1 + .693147


def test_token_rewards_on_last_loss_token_with_tool_span():
    batch = packed([(0, [0, 1, 1, 0, 0], 2.0), (0, [0, 0, 1], -1.0), (0, [0, 0], 5.0)])
    # seq0's last loss token is position 2 (the tool span 3-4 is masked); seq2 has no loss token: no reward
    out = A.token_rewards(batch["rewards"], batch["loss_mask"], batch.seq_index)
    assert_close(out, torch.tensor([0, 0, 2.0, 0, 0, 0, 0, -1.0, 0, 0]))


def test_gae_skips_non_loss_tokens_in_a_packed_batch():
    batch = packed([(0, [0, 1, 0, 1, 1], 1.0), (0, [0, 1], -1.0)])
    values = torch.tensor([0, 0.5, 9.0, 0.2, 0.4, 0, 0.3])  # position 2 is a tool token: its value is skipped
    rewards = A.token_rewards(batch["rewards"], batch["loss_mask"], batch.seq_index)
    adv, ret = A.gae(rewards, values, batch["loss_mask"], batch.cu_seqlens, gamma=0.9, lam=0.5)
    # seq0 (γλ = 0.45): t4 δ = 1 - 0.4 = 0.6, A 0.6; t3 δ = 0.9·0.4 - 0.2 = 0.16, A 0.16 + 0.45·0.6 = 0.43
    #   t1 (next loss token t3): δ = 0.9·0.2 - 0.5 = -0.32, A -0.32 + 0.45·0.43 = -0.1265
    # seq1: t1 δ = -1 - 0.3 = -1.3
    assert_close(adv, torch.tensor([0, -0.1265, 0, 0.43, 0.6, 0, -1.3]))
    # R = A + V on loss tokens: [-0.1265 + 0.5, 0.43 + 0.2, 0.6 + 0.4], [-1.3 + 0.3]
    assert_close(ret, torch.tensor([0, 0.3735, 0, 0.63, 1.0, 0, -1.0]))


def test_gae_without_critic_is_reward_to_go():
    batch = packed([(0, [0, 1, 1, 1], 1.0)])
    rewards = torch.tensor([0, -0.1, 0.0, 1.0])
    adv, _ = A.gae(rewards, torch.zeros(4), batch["loss_mask"], batch.cu_seqlens, gamma=1.0, lam=1.0)
    assert_close(adv, torch.tensor([0, 0.9, 1.0, 1.0]))  # [-0.1 + 0 + 1, 0 + 1, 1]


def test_state_values_shift_per_sequence():
    batch = packed([(0, [0, 1, 1], 0.0), (0, [0, 1], 0.0)])
    outputs = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    # V_t is the output at t - 1 within the sequence, 0 at each start: [0, 1, 2 | 0, 4]
    assert_close(A.state_values(outputs, batch.position_ids), torch.tensor([0, 1.0, 2.0, 0, 4.0]))


def test_whiten():
    adv, mask = torch.tensor([0, 1.0, 3.0, 9.0]), torch.tensor([0, 1, 1, 0])
    # loss tokens [1, 3]: mean 2, std sqrt(2/1) = 1.414214 -> [-0.707107, 0.707107]
    assert_close(A.whiten(adv, mask, unbiased=True, eps=0.0), torch.tensor([0, -0.707107, 0.707107, 0]))
