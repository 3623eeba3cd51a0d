"""Registers every preset of :mod:`areal_grpo.presets` as an algorithm (entry point ``areal: grpo``)."""

from areal_core.plugin import Component, hookimpl
from areal_grpo.presets import PRESETS

FACTORY = "areal_grpo.ppo:PPOAlgorithm"


@hookimpl
def areal_register_algorithms():
    return [Component(name, FACTORY, f"areal_grpo.presets:{model.__name__}", summary)
            for name, (model, summary) in PRESETS.items()] + [
        Component("distill", "areal_grpo.distill:DistillAlgorithm", "areal_grpo.distill:DistillConfig",
                  "on-policy distillation: reverse KL to a frozen teacher (the ref engine), plus GRPO (rl_coef)")]
