"""The myplugin reward passes areal's reward contract suite, plus its own behaviour tests."""

import areal_myplugin.plugin
from areal_core.testing.reward import RewardCase, RewardContract


class TestMypluginReward(RewardContract):
    plugin = areal_myplugin.plugin  # registered for the test only; entry points are not consulted
    component_name = "myplugin"
    component_config = {"answer_field": "answer"}
    cases = [
        RewardCase("What is 6*7?", "It is 42.", {"answer": "42"}, 1.0),
        RewardCase("What is 6*7?", "It is 421.", {"answer": "42"}, 0.0),
        RewardCase("Capital of France?", "paris, of course", {"answer": "Paris"}, 1.0),
        RewardCase("No answer given", "anything", {}, 0.0),
    ]


class TestCaseSensitive(RewardContract):
    plugin = areal_myplugin.plugin
    component_name = "myplugin"
    component_config = {"case_sensitive": True}
    cases = [RewardCase("Capital?", "paris", {"answer": "Paris"}, 0.0), RewardCase("Capital?", "Paris", {"answer": "Paris"}, 1.0)]
