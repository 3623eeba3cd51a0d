"""The RL test's reward, registered as a plugin module (in-process through the registry's extra
plugins; in trainer rank processes through a test-made dist-info entry point)."""

from areal_core.plugin import Component, hookimpl


def has_letter(prompt, completion, sample):
    """1 when the completion contains the requested letter (the untrained tiny model scores about half)."""
    return 1.0 if sample["answer"] in completion else 0.0


def make_reward(config):
    return has_letter


@hookimpl
def areal_register_rewards():
    return [Component("has_letter", "_megatron_reward:make_reward", None, "the requested letter appears")]
