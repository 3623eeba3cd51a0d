"""areal-grpo: the PPO family of RL algorithms as presets of one decoupled-PPO path.

The public API is ``__all__``: what a third party may import from ``areal_grpo`` and rely on
across minor versions (the submodules are implementation and may change). Importing this package
loads no torch; the names that need it are imported on first use.
"""

from areal_grpo.config import PPOConfig
from areal_grpo.policy_loss import PolicyLoss, PolicyLossInput, get_policy_loss, policy_loss_names, register_policy_loss

__all__ = [
    "LOG_RATIO_BOUND", "PPOAlgorithm", "PPOConfig", "PolicyLoss", "PolicyLossInput", "StatSums", "bounded_exp",
    "get_policy_loss", "policy_loss_names", "register_policy_loss",
]

_LAZY = {"PPOAlgorithm": "areal_grpo.ppo", "StatSums": "areal_grpo.stats", "LOG_RATIO_BOUND": "areal_grpo.numerics",
         "bounded_exp": "areal_grpo.numerics"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'areal_grpo' has no attribute {name!r}")
