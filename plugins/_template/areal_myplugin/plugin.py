"""Registers this distribution's components with areal (entry point ``areal`` -> this module).

Keep this module import-light: it is imported by every areal process at discovery, so it names
factories and config models as ``"module:attr"`` strings instead of importing them.
"""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_rewards():
    return [
        Component(
            "myplugin",
            "areal_myplugin.reward:MypluginReward",
            "areal_myplugin.reward:MypluginRewardConfig",
            "1 when the completion contains the sample's answer as a whole word",
        ),
    ]
