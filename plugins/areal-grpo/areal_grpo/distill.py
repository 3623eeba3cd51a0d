"""``distill``: on-policy distillation from a frozen teacher, added to the PPO loss (or alone).

The teacher is the run's ``ref`` engine (``ref: {name: fsdp, path: TEACHER_DIR}``), frozen. Per
generated token t of a sample drawn from the policy, with ``d_t = log π_θ(x_t) − log π_T(x_t)``
(a one-sample estimate of the reverse KL ``KL(π_θ ‖ π_T)`` at that position)::

    loss = rl_coef · L_PPO  +  distill_coef · agg_t( w_t · r_t · sg(d_t) )
    r_t  = π_θ(x_t) / π_prox(x_t)      (= 1 in value, carries the gradient ∇ log π_θ)
    w_t  = the behaviour importance weight π_prox/π_behav of the decoupled PPO path (1 if off)

so the gradient is ``E[d_t ∇ log π_θ(x_t)]``, the policy gradient of the per-token reverse KL
with the KL as a cost (each position's own term; later positions' dependence on x_t is not
credited, as in on-policy distillation). ``agg`` is the algorithm's ``loss_aggregation`` over the
same tokens and normaliser as the PPO loss. ``rl_coef = 0`` is pure distillation: the reward is
then only logged (e.g. to watch accuracy rise). The teacher's logprobs fill ``ref_logprobs``, so
``kl_reward_coef`` / ``kl_loss_coef`` (if set) also measure against the teacher. Metrics:
``distill/reverse_kl`` (mean d_t over the update tokens, before the update), ``kl_ref/mean``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from areal_core.plugin import ArealError, SequenceBatch
from areal_grpo.config import PPOConfig
from areal_grpo.losses import aggregate
from areal_grpo.numerics import bounded_exp
from areal_grpo.ppo import PPOAlgorithm


class DistillConfig(PPOConfig):
    """GRPO plus reverse-KL distillation to the frozen teacher in the `ref:` engine."""

    distill_coef: float = Field(1.0, ge=0, description="weight of the per-token reverse KL to the teacher")
    rl_coef: float = Field(1.0, ge=0, description="weight of the PPO loss; 0: pure distillation")

    @property
    def needs_ref(self) -> bool:
        return True


class DistillAlgorithm(PPOAlgorithm):
    """PPO (any preset's knobs) with the distillation term of the module docstring."""

    config: DistillConfig

    def train_step(self, batch, actor, critic=None, ref=None):
        if ref is None:
            raise ArealError(f"algorithm {self.config.name!r} distills from the `ref:` engine: add "
                             "`ref: {name: fsdp, path: TEACHER_MODEL_DIR}` to the run config")
        return super().train_step(batch, actor, critic, ref)

    def policy_loss_fn(self, logprobs: torch.Tensor, entropy: torch.Tensor, mb: SequenceBatch):
        cfg = self.config
        keep = mb["update_mask"] > 0
        gap = torch.where(keep, logprobs.detach() - mb["ref_logprobs"], 0.0)
        prox = mb.tokens.get("prox_logprobs", mb["logprobs"])
        ratio = bounded_exp(torch.where(keep, logprobs - prox, 0.0))
        weights = torch.where(keep, mb["behav_weights"], 0.0) if "behav_weights" in mb.tokens else keep.float()
        self.step_stats.add_mean("distill/reverse_kl", gap, keep)
        loss = cfg.distill_coef * aggregate(weights * ratio * gap, keep, mb.seq_index, mb.num_seqs, cfg.loss_aggregation)
        if cfg.rl_coef > 0:
            loss = loss + cfg.rl_coef * super().policy_loss_fn(logprobs, entropy, mb)[0]
        return loss, {}
