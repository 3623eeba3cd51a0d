"""What areal-example adds to areal (entry point ``areal: example`` -> this module).

Factories and config models are named as strings, so ``areal plugins`` and config validation
never import torch through this module.
"""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_algorithms():
    return [
        Component("reinforce_baseline", "areal_example.reinforce:ReinforceWithBaseline",
                  "areal_example.reinforce:ReinforceConfig", "REINFORCE with a mean-reward baseline (no clipping, no critic)"),
        # areal-grpo's PPO step with the policy loss that areal_example.cispo registers (importing the
        # config model registers it)
        Component("cispo", "areal_grpo:PPOAlgorithm", "areal_example.cispo:CISPOConfig",
                  "CISPO: clipped, stop-gradient importance weight times advantage times log-prob (on areal-grpo)"),
    ]


@hookimpl
def areal_register_rewards():
    return [
        Component("regex_match", "areal_example.rewards:RegexMatchReward",
                  "areal_example.rewards:RegexMatchConfig", "scores whether the completion matches a regular expression"),
    ]
