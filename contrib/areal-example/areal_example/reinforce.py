"""``reinforce_baseline``: REINFORCE (Williams, 1992) with a mean-reward baseline.

For sequence i with reward r_i and baseline b_i, every completion token t gets the advantage
A_i = r_i - b_i, and the loss over the batch is the token mean

    L(θ) = - Σ_i Σ_t m_t · A_i · log π_θ(y_t | y_<t)  /  Σ_i Σ_t m_t        (m: loss mask)
           - β · (mean token entropy)                                       (β = entropy_coef)

Baselines: ``group_mean`` (b_i = mean reward of i's group, the n samples of one prompt),
``batch_mean`` (b = mean over the batch) or ``none``. There is no importance ratio and no
clipping: this is the on-policy gradient, one optimizer step per batch. With stale samples
(``rollout.max_head_offpolicyness`` > 0) it is biased; use ``grpo`` for the decoupled objective.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from areal_core.plugin import ComponentConfig, SequenceBatch, TrainEngine, Trajectory


class ReinforceConfig(ComponentConfig):
    """Options of the ``reinforce_baseline`` algorithm."""

    baseline: Literal["group_mean", "batch_mean", "none"] = Field("group_mean", description="what is subtracted from each reward")
    entropy_coef: float = Field(0.0, ge=0.0, description="β: weight of the entropy bonus")
    drop_uniform_groups: bool = Field(True, description="drop groups whose rewards are all equal (their advantages are all 0)")


def baseline_advantages(rewards: torch.Tensor, group_index: torch.Tensor, baseline: str) -> torch.Tensor:
    """A = r - b per sequence. rewards [B] float, group_index [B] long -> [B]."""
    if baseline == "none":
        return rewards.clone()
    if baseline == "batch_mean":
        return rewards - rewards.mean()
    n_groups = int(group_index.max()) + 1
    sums = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, group_index, rewards)
    counts = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, group_index, torch.ones_like(rewards))
    return rewards - (sums / counts)[group_index]


class ReinforceWithBaseline:
    """``factory(config) -> Algorithm``."""

    def __init__(self, config: ReinforceConfig):
        self.config = config

    def keep_group(self, group: list[Trajectory]) -> bool:
        return not (self.config.drop_uniform_groups and len({t.reward for t in group}) == 1)

    def train_step(self, batch: SequenceBatch, actor: TrainEngine, critic: TrainEngine | None = None,
                   ref: TrainEngine | None = None) -> dict[str, float]:
        advantages = baseline_advantages(batch["rewards"].float(), batch["group_index"], self.config.baseline)  # [B]
        per_token = advantages[batch.seq_index] * batch["loss_mask"]  # [T]
        work = SequenceBatch(batch.cu_seqlens, {**batch.tokens, "advantages": per_token}, dict(batch.seqs))
        stats = actor.train_batch(work, self.loss, self.loss_weight)
        return {
            **{k: float(v) for k, v in stats.items()},
            "reward/mean": float(batch["rewards"].float().mean()),
            "advantage/mean": float(advantages.mean()),
            "advantage/abs_max": float(advantages.abs().max()),
        }

    def loss(self, logprobs: torch.Tensor, entropy: torch.Tensor, mb: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed over the micro-batch's loss tokens; the engine divides by the global token count."""
        mask = mb["loss_mask"].to(logprobs.dtype)
        policy = -(mb["advantages"].to(logprobs.dtype) * logprobs * mask).sum()
        bonus = (entropy * mask).sum()
        n = mask.sum().clamp(min=1.0)
        return policy - self.config.entropy_coef * bonus, {"entropy": float(bonus.detach() / n),
                                                           "policy_loss": float(policy.detach() / n)}

    @staticmethod
    def loss_weight(mb: SequenceBatch) -> float:
        return float(mb["loss_mask"].sum())
