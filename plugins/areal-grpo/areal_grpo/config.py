"""PPOConfig: every knob of the one PPO path, each validated and described.

The presets in :mod:`areal_grpo.presets` subclass this model and change only defaults. Fields are
grouped in the order :meth:`areal_grpo.ppo.PPOAlgorithm.train_step` uses them: reward shaping →
reward normalisation → KL penalty in the reward → GAE → advantage normalisation; then the
proximal policy and behaviour importance weights; then the policy loss; then the update schedule
and the critic; then dynamic filtering.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from areal_core.plugin import ComponentConfig
from areal_grpo.policy_loss import policy_loss_names, unknown_policy_loss

NormLevel = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]


class PPOConfig(ComponentConfig):
    """Decoupled PPO with group-relative or critic (GAE) advantages (DESIGN.md §3)."""

    # -- rewards ------------------------------------------------------------------------------
    reward_bias: float = Field(0.0, description="b in the shaped reward clip((r + b)·s, -c, c)")
    reward_scaling: float = Field(1.0, gt=0, description="s in the shaped reward clip((r + b)·s, -c, c)")
    reward_clip: float = Field(20.0, gt=0, description="c in the shaped reward clip((r + b)·s, -c, c)")
    max_response_tokens: int | None = Field(
        None, ge=1, description="L_max of the overlong penalty: the workflow's max_new_tokens (needed when "
                                "overlong_buffer_ratio > 0)")
    overlong_buffer_ratio: float = Field(
        0.0, ge=0, lt=1, description="overlong penalty (DAPO): responses longer than (1 - ratio)·L_max lose "
                                     "factor·(length - (1 - ratio)·L_max)/(ratio·L_max), at most factor; 0 disables")
    overlong_penalty_factor: float = Field(1.0, ge=0, description="the overlong penalty at L_max tokens")

    # -- reward normalisation (per sequence, before the rewards become token rewards) ----------
    reward_norm_mean: NormLevel = Field(
        "group", description="baseline subtracted from each reward: the mean of its group (same prompt), of the "
                             "whole batch, or none")
    reward_norm_leave_one_out: bool = Field(
        False, description="the baseline excludes the sample itself: mean of the other n-1 rewards (RLOO)")
    reward_norm_std: NormLevel = Field(
        "group", description="divide the centred reward by the std of the rewards of its group, of the batch, or not")
    norm_unbiased_std: bool = Field(True, description="std with Bessel's correction (n-1); a single value has std 0")
    norm_eps: float = Field(1e-5, gt=0, description="added to every std before dividing")

    # -- token rewards, GAE, advantage normalisation -------------------------------------------
    kl_reward_coef: float = Field(
        0.0, ge=0, description="β of the per-token KL penalty -β·KL(π_old‖π_ref) added to the reward (needs a ref "
                               "engine); 0 disables")
    kl_reward_estimator: KLEstimator = Field(
        "k1", description="KL estimator of the reward penalty with d = log π_old - log π_ref: k1 = d, k2 = d²/2, "
                          "k3 = exp(-d) - 1 + d")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount γ over the response tokens")
    gae_lambda: float = Field(1.0, ge=0, le=1, description="GAE λ; with γ = λ = 1 and no critic every token "
                                                           "gets the reward-to-go")
    advantage_norm: bool = Field(
        False, description="whiten advantages over all loss tokens of the batch: (A - mean)/(std + eps)")

    # -- proximal policy and behaviour importance weights (decoupled PPO) ----------------------
    prox_logprobs: Literal["recompute", "loglinear", "behaviour"] = Field(
        "recompute", description="π_prox: recompute with the current weights before the update (one forward); "
                                 "loglinear: log π_b + α(log π_θ - log π_b), α = (v - v_b)/(v + 1 - v_b) with v the "
                                 "actor version and v_b the token's version (no forward); behaviour: π_prox = π_b "
                                 "(classic PPO on the rollout logprobs)")
    behav_weight_mode: Literal["none", "cap", "mask"] = Field(
        "mask", description="behaviour importance weight w = π_prox/π_behav: none (w = 1), cap (w = min(w, upper)), "
                            "or mask (tokens/sequences with w outside [lower, upper] leave the loss)")
    behav_weight_level: Literal["token", "sequence"] = Field(
        "token", description="w per token, or per sequence: exp(mean of the tokens' log w) for every token of it")
    behav_weight_lower: float = Field(0.0, ge=0, description="mask mode: smallest w kept")
    behav_weight_upper: float = Field(5.0, gt=0, description="mask mode: largest w kept; cap mode: the cap")
    m2_threshold: float | None = Field(
        None, gt=0, description="M2PO: mask the tokens with the largest (log π_behav - log π_prox)² until their "
                                "batch mean is below this; null disables (needs prox_logprobs=recompute)")

    # -- policy loss ---------------------------------------------------------------------------
    policy_loss: str = Field(
        "clip", description="the per-token policy loss, by registered name: clip: -w·min(r·A, clip(r, 1-ε, "
                            "1+ε_high)·A); sapo: -w·g(r)·A with the soft gate g(r) = (4/τ)·sigmoid(τ·(r - 1)), "
                            "τ = τ_pos for A > 0 else τ_neg; or one a plugin registers with "
                            "areal_grpo.register_policy_loss")
    importance_level: Literal["token", "sequence"] = Field(
        "token", description="ratio r = π_θ/π_prox per token, or per sequence (GSPO): exp(mean over its tokens of "
                             "log r), paired with the sequence's mean advantage")
    eps_clip: float = Field(0.2, gt=0, lt=1, description="ε: r is clipped below at 1 - ε")
    eps_clip_higher: float | None = Field(None, gt=0, description="ε_high: r is clipped above at 1 + ε_high; null: ε")
    dual_clip: float | None = Field(
        None, gt=1, description="c of dual-clip PPO: for A < 0 the token loss is at most -c·A; null disables")
    sapo_tau_pos: float = Field(1.0, gt=0, description="SAPO gate temperature τ_pos for A > 0")
    sapo_tau_neg: float = Field(1.05, gt=0, description="SAPO gate temperature τ_neg for A ≤ 0")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus: the loss gets -coef·H per token")
    kl_loss_coef: float = Field(
        0.0, ge=0, description="KL(π_θ‖π_ref) term in the loss, coef·k(log π_θ - log π_ref) per token (needs a ref "
                               "engine); 0 disables")
    kl_loss_estimator: KLEstimator = Field("k3", description="KL estimator of the loss term (see kl_reward_estimator)")
    loss_aggregation: Literal["token_mean", "seq_mean", "token_sum_norm"] = Field(
        "token_mean", description="token_mean: sum over every loss token of the global batch / their count; "
                                  "seq_mean: mean over sequences of each sequence's token mean; token_sum_norm: "
                                  "token sum / (sequences·loss_norm_tokens), Dr.GRPO's constant normaliser")
    loss_norm_tokens: int | None = Field(
        None, ge=1, description="the constant of loss_aggregation=token_sum_norm (usually max_new_tokens)")

    # -- update schedule and critic ------------------------------------------------------------
    n_minibatches: int = Field(1, ge=1, description="optimizer steps per epoch: the batch splits into this many "
                                                    "minibatches of about equal token count")
    ppo_epochs: int = Field(1, ge=1, description="passes over the batch")
    temperature: float = Field(
        1.0, gt=0, description="logits are divided by this when recomputing logprobs; set it to the sampling "
                               "temperature (and the train engine's)")
    use_critic: bool = Field(False, description="learn a value model V (critic engine) for GAE; without it V = 0")
    value_clip: float | None = Field(
        0.2, gt=0, description="critic loss ½·max((V - R)², (clip(V, V_old - c, V_old + c) - R)²); null: ½(V - R)²")

    # -- dynamic filtering ---------------------------------------------------------------------
    drop_uniform_groups: bool = Field(
        False, description="keep_group drops a group whose rewards are all equal (DAPO dynamic sampling)")

    @field_validator("policy_loss")
    @classmethod
    def _known_policy_loss(cls, name: str) -> str:
        if name not in policy_loss_names():
            raise ValueError(unknown_policy_loss(name))
        return name

    @model_validator(mode="after")
    def _check_combinations(self):
        problems = []
        if self.overlong_buffer_ratio > 0 and self.max_response_tokens is None:
            problems.append("max_response_tokens is required when overlong_buffer_ratio > 0 (set it to the "
                            "workflow's max_new_tokens)")
        if self.behav_weight_mode == "mask" and self.behav_weight_lower >= self.behav_weight_upper:
            problems.append(f"behav_weight_lower ({self.behav_weight_lower}) must be below behav_weight_upper "
                            f"({self.behav_weight_upper})")
        if self.m2_threshold is not None and self.prox_logprobs != "recompute":
            problems.append(f"m2_threshold needs prox_logprobs=recompute (got {self.prox_logprobs!r}): the M2PO mask "
                            "is computed from π_prox before the update")
        if self.loss_aggregation == "token_sum_norm" and self.loss_norm_tokens is None:
            problems.append("loss_norm_tokens is required when loss_aggregation=token_sum_norm")
        if self.policy_loss != "clip" and self.dual_clip is not None:
            problems.append("dual_clip applies to policy_loss=clip only")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def eps_high(self) -> float:
        """ε_high, the upper clip margin (ε when eps_clip_higher is unset)."""
        return self.eps_clip if self.eps_clip_higher is None else self.eps_clip_higher

    @property
    def needs_ref(self) -> bool:
        """True when a reference engine must be passed to train_step."""
        return self.kl_reward_coef > 0 or self.kl_loss_coef > 0
