"""gsm8k and math_answer pass the reward contract suite; options and errors."""

import pytest

import areal_math.plugin
from areal_core.config.base import validate_section
from areal_core.errors import ArealError
from areal_core.testing.reward import RewardCase, RewardContract
from areal_math.reward import GSM8KConfig, MathAnswerConfig, MathAnswerReward

SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
ROW = {"question": "How many clips did Natalia sell?", "answer": SOLUTION}


class TestGSM8KReward(RewardContract):
    plugin = areal_math.plugin
    component_name = "gsm8k"
    cases = [
        RewardCase("q", "In May she sold 24, so 48 + 24 = 72.\n#### 72", ROW, 1.0),
        RewardCase("q", "48 + 24 = 72 clips in total, so the answer is \\boxed{72}.", ROW, 1.0),
        RewardCase("q", "The answer is $72.00.", ROW, 1.0),
        RewardCase("q", "48 + 24 = 72", ROW, 1.0),                          # last-number fallback
        RewardCase("q", "She sold 48 + 12 = 60.\n#### 60", ROW, 0.0),
        RewardCase("q", "#### 72.5", ROW, 0.0),
        RewardCase("q", "I am not sure.", ROW, 0.0),                         # nothing to extract
        RewardCase("q", "#### 1,234", {"answer": "#### 1234"}, 1.0),
        RewardCase("q", "\\boxed{\\frac{1}{2}}", {"answer": "0.5"}, 1.0),    # a bare reference
    ]


class TestMathAnswerStrict(RewardContract):
    plugin = areal_math.plugin
    component_name = "math_answer"
    component_config = {"answer_field": "solution", "require_format": True, "incorrect_reward": -0.5,
                        "no_answer_reward": -1.0}
    cases = [
        RewardCase("q", "so x = \\boxed{\\dfrac{\\pi}{2}}", {"solution": "\\frac{\\pi}{2}"}, 1.0),
        RewardCase("q", "\\boxed{\\pi}", {"solution": "\\frac{\\pi}{2}"}, -0.5),
        RewardCase("q", "it is 12", {"solution": "12"}, -1.0),               # no marked answer: no fallback
        RewardCase("q", "The answer is 12.", {"solution": "12"}, 1.0),
    ]


def test_the_two_names_differ_in_format_order():
    assert GSM8KConfig(name="gsm8k").formats[0] == "hashes"
    assert MathAnswerConfig(name="math_answer").formats[0] == "boxed"
    both = "\\boxed{5}\n#### 6"
    assert MathAnswerReward(GSM8KConfig(name="gsm8k"))("", both, {"answer": "6"}) == 1.0
    assert MathAnswerReward(MathAnswerConfig(name="math_answer"))("", both, {"answer": "5"}) == 1.0


def test_missing_answer_field_names_it():
    reward = MathAnswerReward(GSM8KConfig(name="gsm8k", answer_field="final"))
    with pytest.raises(ArealError, match=r"no 'final' field \(reward.answer_field\); its fields: \['answer', 'question'\]"):
        reward("p", "#### 72", ROW)


@pytest.mark.parametrize("section, message", [
    ({"formats": []}, r"reward\.formats: Value error, give at least one answer format"),
    ({"formats": ["boxed", "boxed"]}, r"formats listed more than once: \['boxed'\]"),
    ({"formats": ["latex"]}, r"reward\.formats\.0: Input should be 'hashes', 'boxed', 'answer_is' or 'last_number'"),
    ({"formats": ["last_number"], "require_format": True}, r"require_format=true leaves no format to look for"),
])
def test_bad_options_are_config_errors_at_their_path(section, message):
    with pytest.raises(ArealError, match=message):
        validate_section(GSM8KConfig, {"name": "gsm8k", **section}, path="reward")
