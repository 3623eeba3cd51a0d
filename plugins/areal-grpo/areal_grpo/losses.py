"""Per-token losses of the PPO family, and how a micro-batch's token losses are summed.

All tensors are [T] over the packed tokens of one micro-batch. r = π_θ/π_prox, A the advantage,
w the behaviour weight (see :mod:`areal_grpo.offpolicy`). A policy loss gives ℓ_t and the token's
loss is w·ℓ_t (the algorithm multiplies). The policy losses are registered by name
(:mod:`areal_grpo.policy_loss`) and the ``policy_loss`` config field selects one. r is the exp
of a log-ratio clamped to ±20 (:mod:`areal_grpo.numerics`). Departure: beyond |log r| = 20
(r = 4.9e8) r stays at the bound and passes no gradient; unclamped, float32 overflows to inf at
log r ≈ 88.7 and the gradient becomes NaN even where the clipped loss is finite.

**Clipped surrogate** ``clip`` (PPO, Schulman et al. 2017; asymmetric "clip-higher" from DAPO;
dual clip from Ye et al. 2020)::

    ℓ_t = -min(r·A, clip(r, 1-ε, 1+ε_high)·A)
    ℓ_t = min(ℓ_t, -c·A)  for A < 0, when dual clip c > 1 is set

**Sequence-level ratio** (GSPO, Zheng et al. 2025): every token of sequence i uses
s_i = exp(mean over its loss tokens of log r_t) and the sequence's mean advantage. With
``loss_aggregation=seq_mean`` this is the paper's objective (1/G)·Σ_i min(s_i·A_i, clip(s_i)·A_i);
with ``token_mean`` sequences weigh by length.

**Soft gate** ``sapo`` (SAPO, Gao et al. 2025) in place of the hard clip::

    ℓ_t = -g_τ(r) · A,   g_τ(r) = (4/τ)·sigmoid(τ·(r - 1)),   τ = τ_pos if A > 0 else τ_neg

g_τ has slope 1 at r = 1 (the PPO gradient on-policy) and fades smoothly away from it.
Departure: the paper has no behaviour weight; here w multiplies as in every decoupled loss.

**Value loss** with clipping (PPO2)::

    ℓ_t = ½ · max((V - R)², (V_old + clip(V - V_old, -c, c) - R)²)

**Aggregation.** A loss_fn returns the *sum* of its micro-batch's share and loss_weight_fn that
share's weight; the engine divides the summed numerators by the summed weights of every
micro-batch on every data-parallel rank:

- ``token_mean``: Σ_t ℓ_t over loss tokens / number of loss tokens (the global token mean);
- ``seq_mean``: Σ_i mean_{t∈i} ℓ_t / number of sequences with loss tokens;
- ``token_sum_norm``: Σ_t ℓ_t / (number of sequences · L), L a constant (Dr.GRPO), all
  sequences counted whether or not masking left them any loss token.
"""

from __future__ import annotations

import torch

from areal_grpo.policy_loss import PolicyLossInput, register_policy_loss
from areal_grpo.segments import segment_count, segment_mean, segment_sum


def clipped_policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, *, eps_low: float, eps_high: float,
                        dual_clip: float | None = None):
    """Token losses [T] of the clipped surrogate (before w), and which tokens were clipped / dual-clipped (bool [T])."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    dual_active = torch.zeros_like(clip_active)
    if dual_clip is not None:
        bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (loss > bound)
        loss = torch.where(dual_active, bound, loss)
    return loss, clip_active, dual_active


def sapo_gate(ratio: torch.Tensor, advantages: torch.Tensor, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """[T]: g_τ(r) = (4/τ)·sigmoid(τ·(r - 1)) with τ = τ_pos where A > 0, else τ_neg."""
    tau = torch.where(advantages > 0, tau_pos, tau_neg).to(ratio.dtype)
    return 4.0 / tau * torch.sigmoid(tau * (ratio - 1.0))


@register_policy_loss("clip")
def clip(x: PolicyLossInput) -> torch.Tensor:
    """The clipped surrogate with ``eps_clip``, ``eps_clip_higher``, ``dual_clip``; reports the clip fractions."""
    cfg = x.config
    loss, clipped, dual_clipped = clipped_policy_loss(x.ratio, x.advantages, eps_low=cfg.eps_clip,
                                                      eps_high=cfg.eps_high, dual_clip=cfg.dual_clip)
    x.stats.add_mean("actor/clip_fraction", clipped.float(), x.mask)
    x.stats.add_mean("actor/dual_clip_fraction", dual_clipped.float(), x.mask)
    return loss


@register_policy_loss("sapo")
def sapo(x: PolicyLossInput) -> torch.Tensor:
    """Token losses [T] before w: -g_τ(r)·A with ``sapo_tau_pos`` / ``sapo_tau_neg``."""
    return -sapo_gate(x.ratio, x.advantages, x.config.sapo_tau_pos, x.config.sapo_tau_neg) * x.advantages


def sequence_level(x: torch.Tensor, mask: torch.Tensor, seq_index: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """[T]: every token gets the mean of ``x`` over its sequence's masked tokens (GSPO's log s_i and A_i)."""
    return segment_mean(x, mask, seq_index, num_seqs)[seq_index]


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None):
    """Token losses [T] of the (clipped) value objective, and where the clipped branch was taken."""
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(values, dtype=torch.bool)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, seq_index: torch.Tensor, num_seqs: int,
              mode: str) -> torch.Tensor:
    """The micro-batch's numerator: Σ of masked token losses, or for seq_mean Σ_i of sequence means."""
    masked = torch.where(mask, token_loss, 0.0)
    if mode == "seq_mean":
        return (segment_sum(masked, seq_index, num_seqs) / segment_count(mask, seq_index, num_seqs).clamp(min=1)).sum()
    return masked.sum()


def aggregate_weight(mask: torch.Tensor, seq_index: torch.Tensor, num_seqs: int, mode: str,
                     norm_tokens: int | None = None) -> float:
    """The micro-batch's share of the normaliser that matches :func:`aggregate`."""
    if mode == "token_mean":
        return float(mask.sum())
    if mode == "seq_mean":
        return float((segment_count(mask, seq_index, num_seqs) > 0).sum())
    if norm_tokens is None:
        raise ValueError(f"aggregate_weight: mode={mode!r} needs norm_tokens")
    return float(num_seqs * norm_tokens)
