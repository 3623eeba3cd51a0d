"""The policy-loss extension point: per-token actor losses registered by name.

A policy loss maps one micro-batch's :class:`PolicyLossInput` to token losses ℓ_t [T]; the
``policy_loss`` field of any PPO-family config selects one by name. Everything around it stays
the algorithm's: π_prox, the behaviour weights w and the masks before it; after it the weight,
the mask, the entropy bonus and KL term, the aggregation::

    loss = aggregate( where(mask, w·ℓ_t - c_H·H_t + c_KL·k(log π_θ - log π_ref)_t, 0) )

Write one, in any package (import this module's names from ``areal_grpo``)::

    from areal_grpo import PolicyLossInput, register_policy_loss

    @register_policy_loss("reinforce_is")
    def reinforce_is(x: PolicyLossInput):
        x.stats.add_mean("actor/my_stat", x.ratio, x.mask)
        return -x.ratio.detach() * x.advantages * x.logprobs

and declare it in the package's ``pyproject.toml`` so that a run config can select it before
anything imported the module (the entry point is loaded, i.e. the module imported, on first use)::

    [project.entry-points."areal_grpo.policy_losses"]
    reinforce_is = "my_pkg.losses:reinforce_is"

Then ``algorithm: {name: grpo, policy_loss: reinforce_is}`` selects it (see
``contrib/areal-example``'s ``cispo``). A loss registered only by the decorator is selectable once
its module is imported.

Contract of a loss: return a [T] tensor differentiable in ``x.logprobs``; values off ``x.mask``
are discarded with ``torch.where``, but their gradient must stay finite: exponentiate only
``x.ratio`` / ``x.log_ratio`` (already 0 off the mask and bounded) or bound what you exp with
``areal_grpo.bounded_exp``. Report statistics with ``x.stats.add_mean`` / ``x.stats.add_max``
(see ``areal_grpo.StatSums`` for how they are reduced). A result of another shape is an error.

The built-ins, ``clip`` and ``sapo``, live in :mod:`areal_grpo.losses`. Built-ins and entry points
are known by name without importing them, so a config is validated without importing torch.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from areal_core.plugin import ArealError

if TYPE_CHECKING:
    import torch

    from areal_grpo.config import PPOConfig
    from areal_grpo.stats import StatSums

ENTRY_POINT_GROUP = "areal_grpo.policy_losses"
# name -> "module:function", loaded on first use like an entry point
BUILTIN_POLICY_LOSSES = {"clip": "areal_grpo.losses:clip", "sapo": "areal_grpo.losses:sapo"}


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
    """The names a config may select: built-ins, installed entry points, and every loss registered so far."""
    return sorted({*_declared(), *_LOSSES})


def get_policy_loss(name: str) -> PolicyLoss:
    """The loss registered as ``name``, importing a built-in or entry point on first use; ArealError if none is."""
    if name not in _LOSSES:
        declared = _declared()
        if name not in declared:
            raise ArealError(unknown_policy_loss(name))
        try:
            fn = importlib.metadata.EntryPoint(name, declared[name], ENTRY_POINT_GROUP).load()
        except (ImportError, AttributeError) as exc:
            raise ArealError(f"policy loss {name!r} is declared as {declared[name]!r}, which does not load: "
                             f"{type(exc).__name__}: {exc}") from exc
        register_policy_loss(name)(fn)
    return _LOSSES[name]


def _declared() -> dict[str, str]:
    """name -> "module:function" of the built-ins and of the installed packages' entry points."""
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**installed, **BUILTIN_POLICY_LOSSES}


def unknown_policy_loss(name: str) -> str:
    """The message for a ``policy_loss`` nobody registered."""
    return (f"unknown policy loss {name!r}; registered: {', '.join(policy_loss_names())}. A package registers one "
            "with @areal_grpo.register_policy_loss and declares it under the entry-point group "
            f"{ENTRY_POINT_GROUP!r}; is its package installed?")


def _qualname(fn: PolicyLoss) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
