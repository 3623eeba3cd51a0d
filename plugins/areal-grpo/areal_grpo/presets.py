"""The named algorithms: each a config model that changes only PPOConfig's defaults.

Every preset builds the same :class:`areal_grpo.ppo.PPOAlgorithm`; any field can still be set
in the run config (``algorithm: {name: grpo, eps_clip: 0.1}``), so a preset is a starting point,
not a fork. ``PRESETS`` lists them in the order of DESIGN.md §3.

======================  ==========================================================================
name                    differs from PPOConfig's defaults (group mean/std, clip 0.2, no critic)
======================  ==========================================================================
grpo                    nothing: group mean/std reward normalisation (Shao et al. 2024), token mean
dr_grpo                 no std division (Liu et al. 2025); the global token mean already has no
                        per-sequence length normalisation
lite_ppo                group mean, batch std (Liu et al. 2025, "Tricks or Traps")
rloo                    leave-one-out group mean, no std (Ahmadian et al. 2024)
reinforce_pp            no reward normalisation; k1 KL penalty (β = 0.01) in the token rewards;
                        batch whitening of advantages (Hu 2025)
ppo                     critic with value clipping, GAE λ = 0.95, batch whitening of advantages
dapo                    ε = 0.2, ε_high = 0.28, overlong penalty (buffer 20% of L_max, factor 1),
                        drops groups whose rewards are all equal (Yu et al. 2025)
gspo                    sequence-level ratio and behaviour weight, ε = 3e-4, ε_high = 4e-4,
                        sequence-mean loss (Zheng et al. 2025)
sapo                    soft gate τ_pos = 1.0, τ_neg = 1.05 instead of the hard clip (Gao et al. 2025)
m2po                    second-moment mask with threshold 0.04 (Zheng et al. 2025)
======================  ==========================================================================
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from areal_grpo.config import KLEstimator, NormLevel, PPOConfig


def _default(field: str, value: Any) -> Any:
    """PPOConfig's field ``field`` (description and constraints kept) with a new default (typed Any,
    like ``pydantic.Field``, so it stands as the default of a field of any type)."""
    info = copy.copy(PPOConfig.model_fields[field])
    info.default = value
    return info


class GRPOConfig(PPOConfig):
    """GRPO: group-relative advantages (r - mean_group)/std_group, no critic."""


class DrGRPOConfig(PPOConfig):
    """Dr.GRPO: group mean without std division."""

    reward_norm_std: NormLevel = _default("reward_norm_std", "none")


class LitePPOConfig(PPOConfig):
    """LitePPO: group mean, batch std."""

    reward_norm_std: NormLevel = _default("reward_norm_std", "batch")


class RLOOConfig(PPOConfig):
    """RLOO: leave-one-out group mean baseline, no std."""

    reward_norm_leave_one_out: bool = _default("reward_norm_leave_one_out", True)
    reward_norm_std: NormLevel = _default("reward_norm_std", "none")


class ReinforcePPConfig(PPOConfig):
    """REINFORCE++: k1 KL penalty in the reward, batch-whitened advantages (needs a ref engine)."""

    reward_norm_mean: NormLevel = _default("reward_norm_mean", "none")
    reward_norm_std: NormLevel = _default("reward_norm_std", "none")
    kl_reward_coef: float = _default("kl_reward_coef", 0.01)
    kl_reward_estimator: KLEstimator = _default("kl_reward_estimator", "k1")
    advantage_norm: bool = _default("advantage_norm", True)


class PPOCriticConfig(PPOConfig):
    """PPO: a critic with value clipping, GAE (γ = 1, λ = 0.95), whitened advantages."""

    reward_norm_mean: NormLevel = _default("reward_norm_mean", "none")
    reward_norm_std: NormLevel = _default("reward_norm_std", "none")
    gae_lambda: float = _default("gae_lambda", 0.95)
    advantage_norm: bool = _default("advantage_norm", True)
    use_critic: bool = _default("use_critic", True)


class DAPOConfig(PPOConfig):
    """DAPO: clip-higher, soft overlong penalty, dynamic filtering of uniform groups."""

    eps_clip_higher: float | None = _default("eps_clip_higher", 0.28)
    overlong_buffer_ratio: float = _default("overlong_buffer_ratio", 0.2)
    max_response_tokens: int = _default("max_response_tokens", ...)
    drop_uniform_groups: bool = _default("drop_uniform_groups", True)


class GSPOConfig(PPOConfig):
    """GSPO: sequence-level importance ratio and clipping, sequence-mean loss."""

    importance_level: Literal["token", "sequence"] = _default("importance_level", "sequence")
    behav_weight_level: Literal["token", "sequence"] = _default("behav_weight_level", "sequence")
    eps_clip: float = _default("eps_clip", 3e-4)
    eps_clip_higher: float | None = _default("eps_clip_higher", 4e-4)
    loss_aggregation: Literal["token_mean", "seq_mean", "token_sum_norm"] = _default("loss_aggregation", "seq_mean")


class SAPOConfig(PPOConfig):
    """SAPO: soft sigmoid gate on the ratio instead of the hard clip."""

    policy_loss: str = _default("policy_loss", "sapo")


class M2POConfig(PPOConfig):
    """M2PO: mask tokens with extreme second moments of the behaviour log-ratio."""

    m2_threshold: float | None = _default("m2_threshold", 0.04)


# name -> (config model, one-line summary)
PRESETS: dict[str, tuple[type[PPOConfig], str]] = {
    "grpo": (GRPOConfig, "GRPO: group mean/std normalised rewards, decoupled clipped PPO, no critic"),
    "dr_grpo": (DrGRPOConfig, "Dr.GRPO: group-mean baseline without std division, global token-mean loss"),
    "lite_ppo": (LitePPOConfig, "LitePPO: group-mean baseline, batch-level std"),
    "rloo": (RLOOConfig, "RLOO: leave-one-out group-mean baseline, no std"),
    "reinforce_pp": (ReinforcePPConfig, "REINFORCE++: k1 KL penalty in the reward, batch-whitened advantages"),
    "ppo": (PPOCriticConfig, "PPO: critic with value clipping, GAE, whitened advantages"),
    "dapo": (DAPOConfig, "DAPO: clip-higher, overlong penalty, drops groups with all-equal rewards"),
    "gspo": (GSPOConfig, "GSPO: sequence-level importance ratio and clipping"),
    "sapo": (SAPOConfig, "SAPO: soft sigmoid gate instead of the hard clip"),
    "m2po": (M2POConfig, "M2PO: masks tokens with extreme second-moment behaviour log-ratios"),
}
