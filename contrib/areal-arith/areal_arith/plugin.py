"""What areal-arith adds to areal (entry point ``areal: arith`` -> this module)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_rewards():
    return [
        Component("arith", "areal_arith.reward:ArithReward", "areal_arith.reward:ArithRewardConfig",
                  "1.0 when the completion is exactly the sample's answer (sums of digits)"),
    ]
