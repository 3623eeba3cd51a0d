"""reinforce_baseline's advantages and loss, computed by hand (no engine needed)."""

import pytest
import torch

from areal_core.api.types import Trajectory
from areal_core.data.batch import SequenceBatch
from areal_example.reinforce import ReinforceConfig, ReinforceWithBaseline, baseline_advantages

REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0])
GROUPS = torch.tensor([0, 0, 1, 1])


def test_baselines():
    assert baseline_advantages(REWARDS, GROUPS, "group_mean").tolist() == [0.5, -0.5, 0.0, 0.0]
    assert baseline_advantages(REWARDS, GROUPS, "batch_mean").tolist() == [0.25, -0.75, 0.25, 0.25]
    assert baseline_advantages(REWARDS, GROUPS, "none").tolist() == [1.0, 0.0, 1.0, 1.0]


def test_loss_is_minus_advantage_weighted_logprob_sum():
    algo = ReinforceWithBaseline(ReinforceConfig(name="reinforce_baseline", entropy_coef=0.5))
    trajs = [Trajectory([5, 6, 7], [0, 1, 1], [0.0] * 3, [-1, 0, 0], 1.0, group_id="g"),
             Trajectory([5, 8], [0, 1], [0.0] * 2, [-1, 0], 0.0, group_id="g")]
    batch = SequenceBatch.from_trajectories(trajs)
    batch.tokens["advantages"] = torch.tensor([0.0, 0.5, 0.5, 0.0, -0.5])  # what train_step attaches
    logprobs = torch.tensor([0.0, -1.0, -2.0, 0.0, -4.0])
    entropy = torch.tensor([9.0, 1.0, 1.0, 9.0, 2.0])
    loss, stats = algo.loss(logprobs, entropy, batch)
    # policy: -(0.5*-1 + 0.5*-2 + -0.5*-4) = -0.5 ; entropy over loss tokens: 1 + 1 + 2 = 4
    assert float(loss) == -0.5 - 0.5 * 4
    assert stats == pytest.approx({"entropy": 4 / 3, "policy_loss": -0.5 / 3})
    assert algo.loss_weight(batch) == 3.0


def test_keep_group():
    def group(*rewards):
        return [Trajectory([1, 2], [0, 1], [0.0, 0.0], [-1, 0], r) for r in rewards]

    dropping = ReinforceWithBaseline(ReinforceConfig(name="reinforce_baseline"))
    keeping = ReinforceWithBaseline(ReinforceConfig(name="reinforce_baseline", drop_uniform_groups=False))
    assert dropping.keep_group(group(1.0, 0.0)) and not dropping.keep_group(group(1.0, 1.0))
    assert keeping.keep_group(group(1.0, 1.0))
