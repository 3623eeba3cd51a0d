"""Policy and value losses against values worked out by hand (arithmetic beside each value).

Most tests use a packed micro-batch of two sequences of unequal length with masked prompts:
seq0 = [p, a, b], seq1 = [p, p, c, d, e]; loss tokens a..e. π_prox = π_behav (w = 1) unless a
test says otherwise; π_θ/π_prox on a..e is RATIOS; the advantages are -1 on seq0, +2 on seq1.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from areal_core.api.types import Trajectory
from areal_core.data.batch import SequenceBatch
from areal_core.registry import build_registry
from areal_grpo import plugin
from areal_grpo.losses import aggregate, aggregate_weight, clipped_policy_loss, sapo_gate, value_loss
from areal_grpo.offpolicy import behaviour_weights, loglinear_alpha, loglinear_prox_logprobs, m2po_keep

LOSS_MASK = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1], dtype=torch.float32)
CU = torch.tensor([0, 3, 8])
RATIOS = [1.5, 0.5, 1.0, 1.25, 0.9]  # on a, b, c, d, e
ADVANTAGES = torch.tensor([0, -1.0, -1.0, 0, 0, 2.0, 2.0, 2.0])


def on_loss_tokens(values) -> torch.Tensor:
    out = torch.zeros(8)
    out[LOSS_MASK > 0] = torch.tensor(values, dtype=torch.float32)
    return out


PROX = on_loss_tokens([-1.0] * 5)
THETA = PROX + on_loss_tokens([math.log(r) for r in RATIOS])


@pytest.fixture(scope="module")
def registry():
    return build_registry(extra_plugins=[(plugin, "areal-grpo (under test)")], entry_points=False)


def micro_batch(algo, behav=PROX, advantages=ADVANTAGES, **tokens) -> SequenceBatch:
    batch = SequenceBatch(CU, {"input_ids": torch.arange(8) + 3, "loss_mask": LOSS_MASK, "logprobs": behav,
                               "prox_logprobs": PROX, "advantages": advantages, **tokens},
                          {"rewards": torch.zeros(2), "group_index": torch.tensor([0, 0])})
    return algo.off_policy_corrections(batch, prox_version=0)


def loss_and_weight(registry, name, theta=THETA, entropy=None, config=None, **batch_kw):
    algo = registry.create("algorithm", name, config or {})
    mb = micro_batch(algo, **batch_kw)
    loss, _ = algo.policy_loss_fn(theta, torch.zeros(8) if entropy is None else entropy, mb)
    return loss, algo.policy_loss_weight(mb)


# -- the presets ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "lite_ppo", "rloo", "reinforce_pp", "ppo"])
def test_clipped_surrogate_presets(registry, name):
    theta = THETA.clone().requires_grad_(True)
    loss, weight = loss_and_weight(registry, name, theta=theta)
    # ε = 0.2; token loss max(-A·r, -A·clip(r, 0.8, 1.2)):
    #   a: A -1, r 1.5: max(1.5, 1.2) = 1.5        b: A -1, r 0.5: max(0.5, 0.8) = 0.8 (clipped)
    #   c: A 2, r 1: -2                             d: A 2, r 1.25: max(-2.5, -2.4) = -2.4 (clipped)
    #   e: A 2, r 0.9: max(-1.8, -1.8) = -1.8
    # sum 1.5 + 0.8 - 2 - 2.4 - 1.8 = -3.9 over 5 loss tokens
    assert_close(loss, torch.tensor(-3.9))
    assert weight == 5.0
    # d loss/d log π_θ = -A·r where unclipped, 0 where clipped: [1.5, 0, -2, 0, -1.8]
    loss.backward()
    assert_close(theta.grad, on_loss_tokens([1.5, 0.0, -2.0, 0.0, -1.8]))


def test_dapo_clip_higher(registry):
    loss, weight = loss_and_weight(registry, "dapo", config={"max_response_tokens": 8})
    # as the clipped surrogate but ε_high = 0.28: d: max(-2.5, -2·1.25) = -2.5 (1.25 < 1.28, unclipped)
    # 1.5 + 0.8 - 2 - 2.5 - 1.8 = -4.0
    assert_close(loss, torch.tensor(-4.0))
    assert weight == 5.0


def test_gspo_sequence_ratio_and_sequence_mean(registry):
    loss, weight = loss_and_weight(registry, "gspo")
    # seq0: s = exp((ln 1.5 + ln 0.5)/2) = sqrt(0.75) = 0.866025, A -1: max(0.866025, clip -> 0.9997) = 0.9997
    # seq1: s = exp((0 + ln 1.25 + ln 0.9)/3) = 1.125^(1/3) = 1.040042, A 2:
    #   max(-2.080084, -2·1.0004) = -2.0008
    # sequence means: seq0 0.9997 (both tokens), seq1 -2.0008; sum -1.0011 over 2 sequences
    assert_close(loss, torch.tensor(-1.0011))
    assert weight == 2.0


def test_sapo_soft_gate(registry):
    loss, weight = loss_and_weight(registry, "sapo")
    # -A·g(r), g(r) = (4/τ)·σ(τ(r - 1)); τ_neg = 1.05 for A ≤ 0, τ_pos = 1 for A > 0
    #   a: (4/1.05)·σ(0.525) = 3.809524·0.628316 = 2.393585    b: 3.809524·σ(-0.525) = 3.809524·0.371684 = 1.415938
    #   c: -2·4·σ(0) = -4    d: -2·4·σ(0.25) = -8·0.562177 = -4.497412    e: -2·4·σ(-0.1) = -8·0.475021 = -3.800167
    # sum -8.488055
    assert_close(loss, torch.tensor(-8.488055))
    assert weight == 5.0


def test_m2po_masks_largest_second_moments(registry):
    behav = PROX + on_loss_tokens([0.5, 0.1, 0.0, -0.2, 0.1])
    loss, weight = loss_and_weight(registry, "m2po", behav=behav)
    # m2 = (log π_behav - log π_prox)² = [.25, .01, 0, .04, .01], mean .062 ≥ .04: drop a (.25);
    #   the rest [.01, 0, .04, .01] has mean .015 < .04: a leaves the loss and the normaliser
    # w = exp(prox - behav) on b..e: [e^-0.1, 1, e^0.2, e^-0.1] = [.904837, 1, 1.221403, .904837]
    # b: .8·.904837 = .723869   c: -2   d: -2.4·1.221403 = -2.931367   e: -1.8·.904837 = -1.628707
    # sum -5.836205 over 4 tokens
    assert_close(loss, torch.tensor(-5.836205))
    assert weight == 4.0


def test_ppo_value_loss_on_shifted_critic_outputs(registry):
    algo = registry.create("algorithm", "ppo", {})
    # V_old and returns on a..e; the critic's per-position outputs are shifted by one inside each sequence:
    # seq0 outputs [1.0, 0.3, 9.9] -> V_a = 1.0, V_b = 0.3; seq1 outputs all 0.1 -> V_c = V_d = V_e = 0.1
    mb = micro_batch(algo, values=on_loss_tokens([0.5, 0.4, 0.1, 0.1, 0.1]),
                     returns=on_loss_tokens([0.6, 0.2, 0.1, 0.1, 0.1]))
    outputs = torch.tensor([1.0, 0.3, 9.9, 0.1, 0.1, 0.1, 0.1, 0.1])
    loss, _ = algo.value_loss_fn(outputs, torch.zeros(8), mb)
    # a: ½·max((1.0 - .6)², (.5 + clip(.5, ±.2) - .6)²) = ½·max(.16, .01) = .08
    # b: ½·max((.3 - .2)², (.4 + clip(-.1) - .2)²) = ½·.01 = .005;  c, d, e: 0
    assert_close(loss, torch.tensor(0.085))
    assert algo.value_loss_weight(mb) == 5.0


# -- knobs shared by every preset -------------------------------------------------------------

def test_dual_clip(registry):
    loss, _ = loss_and_weight(registry, "grpo", config={"dual_clip": 1.4})
    # a (A = -1): min(1.5, -1.4·A = 1.4) = 1.4; the others are below their bound
    # 1.4 + 0.8 - 2 - 2.4 - 1.8 = -4.0
    assert_close(loss, torch.tensor(-4.0))


def test_entropy_bonus_and_kl_loss(registry):
    entropy = torch.full((8,), 2.0)
    ref = THETA - on_loss_tokens([math.log(2.0), 0, 0, 0, 0])  # log π_θ - log π_ref = ln 2 on a only
    loss, _ = loss_and_weight(registry, "grpo", entropy=entropy, ref_logprobs=ref,
                              config={"entropy_coef": 0.1, "kl_loss_coef": 0.1})
    # -3.9 (clipped surrogate) - 0.1·2·5 (entropy) + 0.1·(e^-ln2 - 1 + ln2 = 0.193147) (k3 on a)
    assert_close(loss, torch.tensor(-3.9 - 1.0 + 0.0193147))


@pytest.mark.parametrize("mode,norm_tokens,expected_loss,expected_weight", [
    ("token_mean", None, -3.9, 5.0),  # token sum over 5 loss tokens
    ("seq_mean", None, -0.916667, 2.0),  # (1.5 + 0.8)/2 + (-2 - 2.4 - 1.8)/3 = 1.15 - 2.066667, 2 sequences
    ("token_sum_norm", 10, -3.9, 20.0),  # token sum over 2 sequences · 10 tokens
])
def test_loss_aggregation(registry, mode, norm_tokens, expected_loss, expected_weight):
    loss, weight = loss_and_weight(registry, "grpo", config={"loss_aggregation": mode, "loss_norm_tokens": norm_tokens})
    assert_close(loss, torch.tensor(expected_loss))
    assert weight == expected_weight


def test_loglinear_proximal_approximation(registry):
    algo = registry.create("algorithm", "grpo", {"prox_logprobs": "loglinear", "behav_weight_mode": "cap"})
    versions = torch.tensor([-1, 3, 5, -1, -1, 5, 5, 5])
    behav = on_loss_tokens([-2.0, -1.0, -1.0, -1.0, -1.0])
    batch = SequenceBatch(CU, {"input_ids": torch.arange(8), "loss_mask": LOSS_MASK, "logprobs": behav,
                               "versions": versions, "advantages": on_loss_tokens([1.0, 0, 0, 0, 0])},
                          {"rewards": torch.zeros(2), "group_index": torch.tensor([0, 0])})
    mb = algo.off_policy_corrections(batch, prox_version=5)
    # a: v_b = 3, v = 5: α = (5 - 3)/(5 + 1 - 3) = 2/3; current-version and prompt tokens: α = 0
    assert_close(mb["prox_alpha"], torch.tensor([0, 2 / 3, 0, 0, 0, 0, 0, 0]))
    theta = on_loss_tokens([-1.0, -1.0, -1.0, -1.0, -1.0])
    loss, _ = algo.policy_loss_fn(theta, torch.zeros(8), mb)
    # a: log π_prox = -2 + (2/3)·(-1 - (-2)) = -1.333333; r = e^(1/3) = 1.395612, w = e^(2/3) = 1.947734
    #   A = 1: -w·min(r, 1.2) = -1.947734·1.2 = -2.337281; b..e have A = 0
    assert_close(loss, torch.tensor(-2.337281))


# -- the pure functions -----------------------------------------------------------------------

def test_clipped_policy_loss_flags_and_dual_clip():
    ratio, adv = torch.tensor([3.0, 1.5, 0.5]), torch.tensor([-1.0, 1.0, 1.0])
    loss, clipped, dual = clipped_policy_loss(ratio, adv, eps_low=0.2, eps_high=0.2, dual_clip=2.0)
    # r 3, A -1: max(3, 1.2) = 3, dual clip min(3, 2) = 2 | r 1.5, A 1: max(-1.5, -1.2) = -1.2 | r .5: max(-.5, -.8)
    assert_close(loss, torch.tensor([2.0, -1.2, -0.5]))
    assert clipped.tolist() == [False, True, False] and dual.tolist() == [True, False, False]


def test_sapo_gate_has_unit_slope_on_policy():
    r = torch.tensor([1.0], requires_grad=True)
    g = sapo_gate(r, torch.tensor([1.0]), tau_pos=3.0, tau_neg=1.0)
    g.backward()
    # g(1) = (4/3)·σ(0) = 2/3, g'(1) = 4·σ(0)·(1 - σ(0)) = 1
    assert_close(g.detach(), torch.tensor([2 / 3]))
    assert_close(r.grad, torch.tensor([1.0]))


def test_value_loss_clip_is_pessimistic():
    # V 1.0, V_old .5, R 1.0: unclipped 0, clipped (.7 - 1)² = .09 -> ½·.09
    loss, clipped = value_loss(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([1.0]), clip=0.2)
    assert_close(loss, torch.tensor([0.045]))
    assert clipped.tolist() == [True]
    loss, _ = value_loss(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([1.0]), clip=None)
    assert_close(loss, torch.tensor([0.0]))


def test_behaviour_weights_token_and_sequence_level():
    seq_index = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    prox = on_loss_tokens([math.log(2), math.log(8), 0.0, math.log(0.5), math.log(4)])
    behav = torch.zeros(8)
    kw = dict(loss_mask=LOSS_MASK, seq_index=seq_index, num_seqs=2, lower=0.6)
    # token w on a..e: [2, 8, 1, 0.5, 4]; cap 5 -> [2, 5, 1, 0.5, 4], all kept
    w, keep = behaviour_weights(prox, behav, mode="cap", level="token", upper=5.0, **kw)
    assert_close(w[LOSS_MASK > 0], torch.tensor([2.0, 5.0, 1.0, 0.5, 4.0]))
    assert keep.tolist() == (LOSS_MASK > 0).tolist()
    # mask [0.6, 5]: b (8) and d (0.5) leave
    w, keep = behaviour_weights(prox, behav, mode="mask", level="token", upper=5.0, **kw)
    assert keep[LOSS_MASK > 0].tolist() == [True, False, True, False, True]
    # sequence level: seq0 exp((ln 2 + ln 8)/2) = 4, seq1 exp((0 + ln .5 + ln 4)/3) = 2^(1/3) = 1.259921;
    # mask [0.6, 3] drops all of seq0
    w, keep = behaviour_weights(prox, behav, mode="mask", level="sequence", upper=3.0, **kw)
    assert_close(w[LOSS_MASK > 0], torch.tensor([4.0, 4.0, 1.259921, 1.259921, 1.259921]))
    assert keep[LOSS_MASK > 0].tolist() == [False, False, True, True, True]
    w, keep = behaviour_weights(prox, behav, mode="none", level="token", upper=3.0, **kw)
    assert_close(w, torch.ones(8))


def test_m2po_keeps_at_least_one_token():
    mask = torch.ones(3)
    # m2 = [1, 4, 9]; no tail mean is below 0.5, so all but the smallest are masked
    keep = m2po_keep(torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3), mask, threshold=0.5)
    assert keep.tolist() == [True, False, False]


def test_loglinear_functions():
    alpha = loglinear_alpha(torch.tensor([-1, 0, 4, 5]), prox_version=5)
    # (5 - 0)/(6 - 0) = 5/6, (5 - 4)/(6 - 4) = 1/2, v_b = v: 0
    assert_close(alpha, torch.tensor([0.0, 5 / 6, 0.5, 0.0]))
    assert_close(loglinear_prox_logprobs(torch.tensor([-3.0]), torch.tensor([-1.0]), torch.tensor([0.5])),
                 torch.tensor([-2.0]))


def test_aggregate_pure():
    token_loss, mask = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, True, False, True])
    seq_index = torch.tensor([0, 0, 1, 1])
    assert_close(aggregate(token_loss, mask, seq_index, 2, "token_mean"), torch.tensor(7.0))  # 1 + 2 + 4
    assert_close(aggregate(token_loss, mask, seq_index, 2, "seq_mean"), torch.tensor(5.5))  # 1.5 + 4
    assert aggregate_weight(mask, seq_index, 2, "token_sum_norm", 8) == 16.0  # 2 sequences · 8


# -- dynamic filtering ------------------------------------------------------------------------

def trajectories(rewards):
    return [Trajectory([1, 2], [0, 1], [0.0, -1.0], [-1, 0], r, group_id="g") for r in rewards]


def test_keep_group_drops_uniform_groups_only_for_dapo(registry):
    dapo = registry.create("algorithm", "dapo", {"max_response_tokens": 8})
    grpo = registry.create("algorithm", "grpo", {})
    assert dapo.keep_group(trajectories([1.0, 1.0, 1.0])) is False
    assert dapo.keep_group(trajectories([0.0, 0.0])) is False
    assert dapo.keep_group(trajectories([1.0, 0.0, 1.0])) is True
    assert grpo.keep_group(trajectories([1.0, 1.0])) is True


def test_masked_token_with_overflowing_weight_keeps_gradients_finite(registry):
    behav = PROX - on_loss_tokens([200.0, 0, 0, 0, 0])  # w = e^200 = inf on a: masked (> 5)
    theta = THETA.clone().requires_grad_(True)
    loss, weight = loss_and_weight(registry, "grpo", theta=theta, behav=behav)
    loss.backward()
    # a leaves loss and normaliser: 0.8 - 2 - 2.4 - 1.8 = -5.4 over 4 tokens
    assert_close(loss, torch.tensor(-5.4))
    assert weight == 4.0 and torch.isfinite(theta.grad).all()
    # sequence-level ratio with token-level masking (ε = 0.5 so gradients flow): a's ratio is seq0's
    # (through b) and its weight inf; the masked token must not turn b's gradient into NaN
    theta = THETA.clone().requires_grad_(True)
    config = {"behav_weight_level": "token", "eps_clip": 0.5, "eps_clip_higher": 0.5}
    loss, _ = loss_and_weight(registry, "gspo", theta=theta, behav=behav, config=config)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(theta.grad).all()
