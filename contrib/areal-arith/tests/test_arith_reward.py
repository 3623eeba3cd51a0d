"""The arith reward passes the reward contract suite; exact-match semantics."""

import pytest

import areal_arith.plugin
from areal_arith.reward import ArithReward, ArithRewardConfig
from areal_core.errors import ArealError
from areal_core.testing.reward import RewardCase, RewardContract


class TestArithReward(RewardContract):
    plugin = areal_arith.plugin
    component_name = "arith"
    cases = [
        RewardCase("3+5+2=", "10", {"answer": "10"}, 1.0),
        RewardCase("3+5+2=", " 10\n", {"answer": "10"}, 1.0),
        RewardCase("3+5+2=", "11", {"answer": "10"}, 0.0),
        RewardCase("3+5+2=", "10 or 11", {"answer": "10"}, 0.0),
        RewardCase("3+5+2=", "", {"answer": "10"}, 0.0),
        RewardCase("0+0=", "0", {"answer": 0}, 1.0),  # a numeric answer field works too
    ]


def test_other_answer_field():
    reward = ArithReward(ArithRewardConfig(name="arith", answer_field="total"))
    assert reward("1+2=", "3", {"total": "3"}) == 1.0


def test_missing_answer_field_names_it():
    reward = ArithReward(ArithRewardConfig(name="arith"))
    with pytest.raises(ArealError, match=r"no 'answer' field \(reward.answer_field\); keys: \['prompt'\]"):
        reward("1+2=", "3", {"prompt": "1+2="})
