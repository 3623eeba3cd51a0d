"""regex_match passes the reward contract suite; placeholders and bad patterns."""

import pytest

import areal_example.plugin
from areal_core.config.base import validate_section
from areal_core.errors import ArealError
from areal_core.testing.reward import RewardCase, RewardContract
from areal_example.rewards import RegexMatchConfig, RegexMatchReward


class TestRegexMatchWithPlaceholder(RewardContract):
    plugin = areal_example.plugin
    component_name = "regex_match"
    component_config = {"pattern": r"<answer>\s*{{answer}}\s*</answer>", "miss_reward": -1.0}
    cases = [
        RewardCase("2+2?", "so <answer> 4 </answer>", {"answer": 4}, 1.0),
        RewardCase("2+2?", "so <answer>44</answer>", {"answer": 4}, -1.0),
        RewardCase("cost?", "<answer>$1.50</answer>", {"answer": "$1.50"}, 1.0),  # the answer is escaped, not a regex
        RewardCase("cost?", "<answer>$1x50</answer>", {"answer": "$1.50"}, -1.0),
    ]


class TestRegexMatchFixedPattern(RewardContract):
    plugin = areal_example.plugin
    component_name = "regex_match"
    component_config = {"pattern": r"\bplease\b", "ignore_case": True}
    cases = [RewardCase("", "Please stop", {}, 1.0), RewardCase("", "pleased", {}, 0.0)]


def test_invalid_pattern_is_a_config_error_at_its_path():
    with pytest.raises(ArealError, match=r"reward\.pattern: Value error, not a valid regular expression: missing \)"):
        validate_section(RegexMatchConfig, {"name": "regex_match", "pattern": "(unclosed"}, path="reward")


def test_missing_sample_field_names_it():
    reward = RegexMatchReward(RegexMatchConfig(name="regex_match", pattern="{{answer}}"))
    with pytest.raises(ArealError, match=r"the sample has no 'answer' \(keys: \['question'\]\)"):
        reward("p", "c", {"question": "q"})
