"""``cispo``: CISPO (MiniMax et al. 2025, "MiniMax-M1", §3.1) as one policy loss on areal-grpo's PPO step.

Written as a third party would, against ``areal_grpo``'s public API only. The paper's objective::

    J(θ) = E[ 1/Σ_i|o_i| · Σ_i Σ_t sg(r̂_i,t) · Â_i,t · log π_θ(o_i,t | q, o_i,<t) ]
    r̂ = clip(r, 1 - ε_low, 1 + ε_high),   r = π_θ/π_old

Where PPO's clip zeroes the gradient of a token whose ratio left [1-ε, 1+ε], here every token
keeps its gradient and only its weight is capped. As in the paper, there is no lower bound (its
ε_low is set large): r̂ = min(r, 1 + ε_high), with ε_high the config's ``eps_clip_higher`` (ε
when unset). Everything else is areal-grpo's: in its decoupled step π_old is π_prox, the token
loss is multiplied by the behaviour weight w = π_prox/π_behav, and the 1/Σ|o_i| normaliser is
``loss_aggregation: token_mean``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from areal_grpo import PolicyLossInput, PPOConfig, register_policy_loss


@register_policy_loss("cispo")
def cispo(x: PolicyLossInput) -> torch.Tensor:
    """Token losses [T]: -sg(min(r, 1 + ε_high))·A·log π_θ; reports the fraction of capped weights."""
    cap = 1.0 + x.config.eps_high
    x.stats.add_mean("actor/cispo_capped_fraction", (x.ratio > cap).float(), x.mask)
    return -x.ratio.clamp(max=cap).detach() * x.advantages * x.logprobs


class CISPOConfig(PPOConfig):
    """areal-grpo's PPO options (group-normalised advantages, no critic) with the CISPO loss."""

    policy_loss: str = Field("cispo", description="the per-token policy loss; cispo: -sg(min(r, 1 + ε_high))·A·"
                                                  "log π_θ (any name registered with areal_grpo.register_policy_loss)")
