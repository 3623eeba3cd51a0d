"""What areal-math adds to areal (entry point ``areal: math`` -> this module)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_rewards():
    return [
        Component("gsm8k", "areal_math.reward:MathAnswerReward", "areal_math.reward:GSM8KConfig",
                  "GSM8K: the completion's final answer (#### / \\boxed / 'answer is' / last number) equals the reference"),
        Component("math_answer", "areal_math.reward:MathAnswerReward", "areal_math.reward:MathAnswerConfig",
                  "math final-answer check, \\boxed{} first; numbers compared exactly, else normalised LaTeX strings"),
    ]
