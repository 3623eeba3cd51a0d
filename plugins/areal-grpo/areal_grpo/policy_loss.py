"""The policy-loss extension point: per-token actor losses registered by name.

A policy loss maps one micro-batch's :class:`PolicyLossInput` to token losses ℓ_t [T]; the
``policy_loss`` field of any PPO-family config selects one by name. Everything around it stays
the algorithm's: π_prox, the behaviour weights w and the masks before it; after it the weight,
the mask, the entropy bonus and KL term, the aggregation::

    loss = aggregate( where(mask, w·ℓ_t - c_H·H_t + c_KL·k3_t, 0) )

Write one, in any package (import this module's names from ``areal_grpo``)::

    from areal_grpo import PolicyLossInput, register_policy_loss

    @register_policy_loss("reinforce_is")
    def reinforce_is(x: PolicyLossInput):
        x.stats.add_mean("actor/my_stat", x.ratio, x.mask)
        return -x.ratio.detach() * x.advantages * x.logprobs

and select it with ``algorithm: {name: grpo, policy_loss: reinforce_is}`` once the module that
registers it is imported (a plugin whose algorithm's config model lives in that module
imports it when the config is validated; see ``contrib/areal-example``'s ``cispo``).

Contract of a loss: return a [T] tensor differentiable in ``x.logprobs``; values off ``x.mask``
are discarded with ``torch.where``, but their gradient must stay finite: exponentiate only
``x.ratio`` / ``x.log_ratio`` (already 0 off the mask and bounded) or bound what you exp with
:func:`areal_grpo.numerics.bounded_exp`. Report statistics with ``x.stats.add_mean`` /
``x.stats.add_max`` (see :class:`areal_grpo.stats.StatSums` for how they are reduced).

The built-ins, ``clip`` and ``sapo``, live in :mod:`areal_grpo.losses`; this module names them so
that a config is validated without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from areal_core.errors import ArealError

if TYPE_CHECKING:
    import torch

    from areal_grpo.config import PPOConfig
    from areal_grpo.stats import StatSums

# name -> module whose import registers it
BUILTIN_POLICY_LOSSES = {"clip": "areal_grpo.losses", "sapo": "areal_grpo.losses"}


@dataclass(frozen=True)
class PolicyLossInput:
    """What a policy loss sees of one micro-batch. Token tensors are [T] over its packed tokens."""

    logprobs: torch.Tensor  # log π_θ: the only tensor with a gradient
    prox_logprobs: torch.Tensor  # log π_prox, the trust-region anchor (no gradient)
    log_ratio: torch.Tensor  # log r = log π_θ - log π_prox; 0 off mask; per sequence with importance_level=sequence
    ratio: torch.Tensor  # r = exp(log r), exponent clamped to ±20 (areal_grpo.numerics.LOG_RATIO_BOUND)
    advantages: torch.Tensor  # A (sequence means with importance_level=sequence)
    mask: torch.Tensor  # bool: the tokens that enter the loss
    seq_index: torch.Tensor  # long: the sequence of each token, in 0..num_seqs-1
    num_seqs: int
    config: PPOConfig  # the algorithm's config (a PPOConfig subclass may add the loss's own fields)
    stats: StatSums  # where the loss reports statistics


PolicyLoss = Callable[[PolicyLossInput], "torch.Tensor"]
_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator: register ``fn(x: PolicyLossInput) -> token losses [T]`` as policy loss ``name``."""
    def register(fn: PolicyLoss) -> PolicyLoss:
        known = _LOSSES.get(name)
        if known is not None and _qualname(known) != _qualname(fn):
            raise ArealError(f"policy loss {name!r} is registered twice: by {_qualname(known)} and by "
                             f"{_qualname(fn)}; rename one of them")
        _LOSSES[name] = fn
        return fn

    return register


def policy_loss_names() -> list[str]:
    """The names a config may select: the built-ins and every loss registered so far."""
    return sorted({*BUILTIN_POLICY_LOSSES, *_LOSSES})


def get_policy_loss(name: str) -> PolicyLoss:
    """The loss registered as ``name`` (a built-in is imported on first use); ArealError if none is."""
    if name not in _LOSSES and name in BUILTIN_POLICY_LOSSES:
        importlib.import_module(BUILTIN_POLICY_LOSSES[name])
    if name not in _LOSSES:
        raise ArealError(unknown_policy_loss(name))
    return _LOSSES[name]


def unknown_policy_loss(name: str) -> str:
    """The message for a ``policy_loss`` nobody registered."""
    return (f"unknown policy loss {name!r}; registered: {', '.join(policy_loss_names())}. A package registers one "
            "with @areal_grpo.register_policy_loss in a module that must be imported first (select the algorithm "
            "whose config model lives there, or import it)")


def _qualname(fn: PolicyLoss) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
