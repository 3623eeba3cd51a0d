"""The advantage pipeline: sequence rewards → per-token advantages, as pure tensor functions.

Layout: B sequences packed in T tokens (``SequenceBatch``): token tensors [T], sequence tensors
[B], ``seq_index`` [T] (sequence of each token), ``group_index`` [B] (prompt group of each
sequence). Token t of a sequence is the action whose logprob sits at t; ``loss_mask`` [T] marks
the generated tokens (prompt and tool-output tokens are 0).

Steps, in order (DESIGN.md §3):

1. Overlong penalty (DAPO, Yu et al. 2025, eq. 13). With L = response length (loss tokens),
   L_max = ``max_response_tokens`` and buffer L_c = ratio·L_max::

       p(L) = -factor · clamp((L - (L_max - L_c)) / L_c, 0, 1)

   (the paper gives -1 beyond L_max; clamping gives the same there.)
2. Shaping: r' = clip((r + p + bias)·scaling, -c, c).
3. Normalisation, each statistic at its own level (group = same prompt, or the batch)::

       A_i = (r'_i - b_i) / (σ_i + eps)

   b_i: the mean of r' over its group/batch, or with leave-one-out the mean of the *other*
   members, (Σ_j r'_j - r'_i)/(n - 1) (RLOO; a member alone gets b_i = r'_i). σ_i: the std of r'
   over its group/batch (Bessel-corrected unless ``unbiased=False``; 0 for a single value).
   Levels may differ: LitePPO is a group mean with a batch std (of the rewards, not of the
   centred rewards). Means and stds are taken in float64 and rounding-sized deviations snap to 0
   (:mod:`areal_grpo.numerics`): a group whose rewards are all equal gets exactly 0.
4. Token rewards: the normalised reward sits on the sequence's last loss token; with a KL
   penalty every loss token also gets -β·k(log π_old - log π_ref) (k1/k2/k3, Schulman 2020;
   the log-ratio is zeroed off the mask before k3's exp, see :func:`kl_estimate`).
5. GAE (Schulman et al. 2016) over each sequence's loss tokens, skipping non-loss tokens (a
   multi-turn sequence's tool outputs)::

       δ_t = r_t + γ·V_next - V_t,    A_t = δ_t + γλ·A_next,    R_t = A_t + V_t

   V_t is the value of the prefix before token t (:func:`state_values`), "next" the next loss
   token of the same sequence, and V = 0 after the last one (every sequence is treated as
   terminated, truncated ones included). Without a critic V = 0; with γ = λ = 1 every loss token
   then carries its sequence's reward-to-go.
6. Optional whitening of advantages over all loss tokens of the batch.
"""

from __future__ import annotations

from typing import Literal

import torch

from areal_grpo.numerics import LOG_RATIO_BOUND, snap_to_zero
from areal_grpo.segments import last_masked_position, segment_count, segment_sum


def state_values(values: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """[T]: V_t, the value of the prefix *before* token t, from a critic's per-position outputs.

    A critic engine returns at position t the value of the prefix ending with token t (the head's
    output there); the action at t is taken from the state before it, so V_t is the output at
    t - 1, and 0 at each sequence's first token. Differentiable (the value loss uses it too).
    """
    return torch.where(position_ids == 0, 0.0, torch.roll(values, 1))


def response_lengths(loss_mask: torch.Tensor, seq_index: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """[B] float: loss tokens per sequence."""
    return segment_count(loss_mask > 0, seq_index, num_seqs)


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, buffer_ratio: float, factor: float) -> torch.Tensor:
    """[B]: DAPO's soft overlong punishment, ≤ 0 (step 1)."""
    buffer = buffer_ratio * max_tokens
    if buffer <= 0:
        return torch.zeros_like(lengths)
    return -factor * ((lengths - (max_tokens - buffer)) / buffer).clamp(0.0, 1.0)


def shape_rewards(rewards: torch.Tensor, bias: float, scaling: float, clip: float) -> torch.Tensor:
    """[B]: clip((r + bias)·scaling, -clip, clip) (step 2)."""
    return ((rewards + bias) * scaling).clamp(-clip, clip)


def _level_index(level: str, group_index: torch.Tensor) -> torch.Tensor:
    return group_index if level == "group" else torch.zeros_like(group_index)


def _mean(x: torch.Tensor, index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n] two-pass mean of ``x`` per segment of ``index`` (the residuals' mean added back), and [n] counts."""
    count = torch.bincount(index, minlength=n).to(x.dtype).clamp(min=1)
    mean = segment_sum(x, index, n) / count
    return mean + segment_sum(x - mean[index], index, n) / count, count


def baseline(rewards: torch.Tensor, index: torch.Tensor, leave_one_out: bool) -> torch.Tensor:
    """[B] float64: the mean reward of each sample's segment (``index`` [B]), optionally leaving itself out.

    Leave-one-out uses (n·m - r)/(n - 1) = m + (m - r)/(n - 1), exact when all rewards are equal.
    """
    x = rewards.double()
    n_seg = int(index.max()) + 1 if index.numel() else 0
    mean, count = _mean(x, index, n_seg)
    mean, count = mean[index], count[index]
    if not leave_one_out:
        return mean
    return torch.where(count > 1, mean + (mean - x) / (count - 1).clamp(min=1), x)


def spread(rewards: torch.Tensor, index: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """[B] float64: the std of the rewards of each sample's segment (0 for a segment of one, and 0 when
    it is within rounding of the mean: see :mod:`areal_grpo.numerics`)."""
    x = rewards.double()
    n_seg = int(index.max()) + 1 if index.numel() else 0
    mean, count = _mean(x, index, n_seg)
    sq = segment_sum((x - mean[index]) ** 2, index, n_seg)
    dof = count - 1 if unbiased else count
    std = torch.where(dof > 0, sq / dof.clamp(min=1), torch.zeros_like(sq)).sqrt()
    return snap_to_zero(std, mean)[index]


def normalize_rewards(rewards: torch.Tensor, group_index: torch.Tensor, *, mean_level: str, leave_one_out: bool,
                      std_level: str, unbiased: bool, eps: float) -> torch.Tensor:
    """[B] in ``rewards``' dtype (float32 for integer rewards): (r - b)/(σ + eps) with b and σ each at its
    own level, "none" skipping it (step 3). Computed in float64; a centred reward within rounding of b is
    exactly 0."""
    out = rewards.double()
    if mean_level != "none":
        b = baseline(rewards, _level_index(mean_level, group_index), leave_one_out)
        out = snap_to_zero(out - b, b)
    if std_level != "none":
        out = out / (spread(rewards, _level_index(std_level, group_index), unbiased) + eps)
    return out.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: Literal["k1", "k2", "k3"],
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π, d = log π - log π_ref (0 where ``mask`` is 0).

    k1 = d (unbiased, high variance), k2 = d²/2, k3 = exp(-d) - 1 + d (unbiased, ≥ 0). k3 is
    evaluated at max(d, -B), B = 20 (:data:`areal_grpo.numerics.LOG_RATIO_BOUND`): below that its
    exp(-d) would overflow, so there the term is e^B - 1 - B ≈ 4.9e8 with no gradient. Off the mask
    d is 0 before any exp, so a masked token contributes 0 and a gradient of exactly 0.
    """
    d = logp - ref_logp
    if mask is not None:
        d = torch.where(mask > 0, d, 0.0)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    d = d.clamp(min=-LOG_RATIO_BOUND)
    return torch.expm1(-d) + d


def token_rewards(seq_rewards: torch.Tensor, loss_mask: torch.Tensor, seq_index: torch.Tensor,
                  kl_penalty: torch.Tensor | None = None) -> torch.Tensor:
    """[T]: each sequence's reward on its last loss token, plus ``kl_penalty`` [T] on loss tokens (step 4)."""
    mask = loss_mask > 0
    out = torch.zeros(loss_mask.shape, dtype=seq_rewards.dtype, device=loss_mask.device)
    if kl_penalty is not None:
        out = torch.where(mask, kl_penalty.to(out.dtype), out)
    last = last_masked_position(mask, seq_index, seq_rewards.numel())
    has_tokens = last >= 0
    out[last[has_tokens]] += seq_rewards[has_tokens]
    return out


def gae(rewards: torch.Tensor, values: torch.Tensor, loss_mask: torch.Tensor, cu_seqlens: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns [T] by GAE over each sequence's loss tokens (step 5); 0 off the mask.

    The packed tokens are scattered into a [B, L_max] grid so the backward recursion runs once per
    position for all sequences at once.
    """
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    num_seqs, max_len = lens.numel(), int(lens.max()) if lens.numel() else 0
    seq = torch.repeat_interleave(torch.arange(num_seqs, device=lens.device), lens)
    pos = torch.arange(rewards.numel(), device=lens.device) - cu_seqlens[:-1][seq]

    def grid(x: torch.Tensor) -> torch.Tensor:
        g = x.new_zeros(num_seqs, max_len)
        g[seq, pos] = x
        return g

    r, v, m = grid(rewards), grid(values.to(rewards.dtype)), grid((loss_mask > 0).to(rewards.dtype)) > 0
    adv = torch.zeros_like(r)
    next_value = r.new_zeros(num_seqs)
    next_adv = r.new_zeros(num_seqs)
    for t in reversed(range(max_len)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        a_t = delta + gamma * lam * next_adv
        adv[:, t] = torch.where(m[:, t], a_t, 0.0)
        next_adv = torch.where(m[:, t], a_t, next_adv)
        next_value = torch.where(m[:, t], v[:, t], next_value)
    advantages = adv[seq, pos]
    returns = torch.where(loss_mask > 0, advantages + values.to(rewards.dtype), 0.0)
    return advantages, returns


def whiten(advantages: torch.Tensor, loss_mask: torch.Tensor, unbiased: bool, eps: float) -> torch.Tensor:
    """[T]: (A - mean)/(std + eps) over the loss tokens; 0 off the mask (step 6). Mean and std in float64
    as in step 3, so loss tokens that all carry the same advantage become exactly 0."""
    mask = loss_mask > 0
    selected = advantages[mask]
    if selected.numel() == 0:
        return advantages
    index = torch.zeros(selected.numel(), dtype=torch.long, device=selected.device)
    out = torch.zeros_like(advantages)
    out[mask] = normalize_rewards(selected, index, mean_level="batch", leave_one_out=False, std_level="batch",
                                  unbiased=unbiased, eps=eps)
    return out
