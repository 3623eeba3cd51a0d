"""What areal-example adds to areal (entry point ``areal: example`` -> this module).

Factories and config models are named as strings, so ``areal plugins`` and config validation
never import torch through this module.
"""

from areal_core import Component, hookimpl


@hookimpl
def areal_register_algorithms():
    return [
        Component("reinforce_baseline", "areal_example.reinforce:ReinforceWithBaseline",
                  "areal_example.reinforce:ReinforceConfig", "REINFORCE with a mean-reward baseline (no clipping, no critic)"),
    ]


@hookimpl
def areal_register_rewards():
    return [
        Component("regex_match", "areal_example.rewards:RegexMatchReward",
                  "areal_example.rewards:RegexMatchConfig", "scores whether the completion matches a regular expression"),
    ]
