"""Off-policy corrections of decoupled PPO: the proximal policy, behaviour weights, the M2PO mask.

Three policies (Fu et al. 2025, AReaL, §5): π_behav produced the tokens (the inference logprobs,
possibly several versions stale), π_prox is the anchor of the trust region (the weights before
this update), π_θ is being optimised. The loss uses r = π_θ/π_prox inside the clip and the
behaviour weight w = π_prox/π_behav outside it. All tensors are [T] (packed tokens).

**Log-linear proximal approximation** (skips the forward pass that recomputes π_prox). With v the
actor's weight version (that of π_prox), v_θ = v + 1 the version this update produces, and v_b
the version that generated the token::

    α = (v - v_b) / (v_θ - v_b) = (v - v_b) / (v + 1 - v_b)
    log π_prox ≈ log π_behav + α · (log π_θ - log π_behav)          (π_θ detached)

A token from the current weights (v_b = v) gets α = 0, i.e. π_prox = π_behav exactly; older tokens
move towards π_θ. Prompt tokens (v_b = -1) get α = 0. Versions must count the same thing on the
tokens and on the actor (weight versions pushed to the inference servers).

**Behaviour weights** w = exp(log π_prox - log π_behav), at token level or per sequence
(exp of the mean log w over the sequence's loss tokens, a geometric mean; log w is 0 off the loss
mask and clamped to ±20 before the exp, :mod:`areal_grpo.numerics`), then either capped
(w ← min(w, upper), truncated importance sampling) or used as a filter: tokens (or whole
sequences) with w outside [lower, upper] leave the loss.

**M2PO** (Zheng et al. 2025): with m_t = (log π_behav - log π_prox)² over the loss tokens of the
whole batch, mask the tokens with the largest m_t, largest first, until the mean of the rest is
below the threshold τ (at least one token stays). Departure: the paper applies this to its
unclipped objective; here it combines with whatever policy loss the config selects.
"""

from __future__ import annotations

import torch

from areal_grpo.numerics import bounded_exp
from areal_grpo.segments import segment_mean


def loglinear_alpha(versions: torch.Tensor, prox_version: int) -> torch.Tensor:
    """[T]: the interpolation weight α of each token (0 for prompt tokens and current-version tokens)."""
    v_b = versions.to(torch.float32)
    generated = (versions >= 0) & (versions <= prox_version)
    alpha = (prox_version - v_b) / (prox_version + 1 - v_b)
    return torch.where(generated, alpha, torch.zeros_like(alpha))


def loglinear_prox_logprobs(behav_logp: torch.Tensor, theta_logp: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """[T]: log π_prox ≈ log π_behav + α·(log π_θ - log π_behav); pass ``theta_logp`` detached."""
    return behav_logp + alpha * (theta_logp - behav_logp)


def behaviour_weights(prox_logp: torch.Tensor, behav_logp: torch.Tensor, loss_mask: torch.Tensor,
                      seq_index: torch.Tensor, num_seqs: int, *, mode: str, level: str, lower: float,
                      upper: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Behaviour weights w [T] (meaningful on loss tokens) and the tokens kept [T] bool (within ``loss_mask``).

    ``mode``: "none" (w = 1), "cap" (w = min(w, upper)) or "mask" (keep only w in [lower, upper]);
    ``level``: "token" or "sequence" (every token gets its sequence's geometric-mean weight).
    """
    mask = loss_mask > 0
    if mode == "none":
        return torch.ones_like(prox_logp), mask
    log_w = torch.where(mask, prox_logp - behav_logp, 0.0)
    if level == "sequence":
        log_w = segment_mean(log_w, mask, seq_index, num_seqs)[seq_index]
    w = bounded_exp(log_w)
    if mode == "cap":
        return w.clamp(max=upper), mask
    return w, mask & (w >= lower) & (w <= upper)


def m2po_keep(behav_logp: torch.Tensor, prox_logp: torch.Tensor, loss_mask: torch.Tensor,
              threshold: float) -> torch.Tensor:
    """[T] bool: the loss tokens M2PO keeps (drop the largest second moments until mean < threshold)."""
    mask = loss_mask > 0
    m2 = (behav_logp - prox_logp)[mask] ** 2
    n = m2.numel()
    if n == 0:
        return mask
    sorted_m2, order = torch.sort(m2, descending=True)
    # mean of the tokens left after dropping the k largest, for k = 0..n-1
    tail_sums = sorted_m2.flip(0).cumsum(0).flip(0)
    tail_means = tail_sums / torch.arange(n, 0, -1, device=m2.device, dtype=m2.dtype)
    below = torch.nonzero(tail_means < threshold)
    n_drop = int(below[0]) if below.numel() else n - 1
    keep_sorted = torch.arange(n, device=m2.device) >= n_drop
    keep_selected = torch.empty_like(keep_sorted)
    keep_selected[order] = keep_sorted
    keep = torch.zeros_like(mask)
    keep[mask] = keep_selected
    return keep
