"""PPOAlgorithm: one decoupled-PPO training step, shared by every preset of the family.

``train_step`` reads top to bottom:

1. recompute: π_prox logprobs with the actor's current weights (unless approximated), π_ref
   logprobs when a KL term is on, V_old with the critic (PPO);
2. advantages: reward shaping → normalisation → KL penalty → GAE → whitening
   (:mod:`areal_grpo.advantages`);
3. off-policy corrections: behaviour weights and masks, M2PO (:mod:`areal_grpo.offpolicy`);
4. update: for each epoch, for each minibatch, one ``actor.train_batch`` (one optimizer step)
   with :meth:`PPOAlgorithm.policy_loss_fn` (around the per-token loss that ``policy_loss``
   selects, :mod:`areal_grpo.policy_loss`), then one ``critic.train_batch`` with
   :meth:`PPOAlgorithm.value_loss_fn` when there is a critic;
5. stats.

Batch fields (``SequenceBatch``, [T] token and [B] sequence tensors). Read: ``input_ids``,
``loss_mask``, ``logprobs`` (π_behav), ``versions``, ``rewards``, ``group_index``. Added (on a
copy; the input batch is never modified): ``prox_logprobs``, ``ref_logprobs``, ``values`` (V_old
of the prefix before each token, see :func:`areal_grpo.advantages.state_values`),
``advantages``, ``returns``, ``behav_weights``, ``update_mask`` (the tokens in the policy loss's
normaliser) and, with the log-linear approximation, ``prox_alpha``. Every tensor that reaches a
loss function was computed before the update; the loss functions only add π_θ (and the entropy)
from the engine.

Masked tokens (behaviour-weight mask, M2PO) leave both the loss and its normaliser. With the
log-linear approximation the behaviour weights depend on π_θ, so its mask is applied inside the
loss: those tokens contribute 0 but still count in the normaliser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from areal_core.plugin import ArealError, SequenceBatch, Trajectory
from areal_grpo import advantages as adv_fns
from areal_grpo.config import PPOConfig
from areal_grpo.losses import aggregate, aggregate_weight, sequence_level, value_loss
from areal_grpo.numerics import bounded_exp
from areal_grpo.offpolicy import behaviour_weights, loglinear_alpha, loglinear_prox_logprobs, m2po_keep
from areal_grpo.policy_loss import PolicyLossInput, get_policy_loss
from areal_grpo.stats import StatSums

if TYPE_CHECKING:
    from areal_core.plugin import TrainEngine

REQUIRED_FIELDS = ("input_ids", "loss_mask", "logprobs", "rewards", "group_index")


class PPOAlgorithm:
    """The PPO family as one algorithm; the config (a preset's defaults) selects the variant."""

    def __init__(self, config: PPOConfig):
        self.config = config
        self.policy_loss = get_policy_loss(config.policy_loss)  # the per-token loss (areal_grpo.policy_loss)
        self.step_stats = StatSums()  # what the loss functions report during train_step (areal_grpo.stats)

    def optimizer_steps_per_train_step(self) -> int:
        """``ppo_epochs × n_minibatches``: the actor's (and critic's) optimizer steps in one ``train_step``
        (:class:`~areal_core.plugin.SupportsOptimizerStepCount`; an unset ``optimizer.total_steps`` spans the run)."""
        return self.config.ppo_epochs * self.config.n_minibatches

    # -- dynamic filtering --------------------------------------------------------------------

    def keep_group(self, group: list[Trajectory]) -> bool:
        """False drops the group: with ``drop_uniform_groups``, when all its rewards are equal."""
        if not self.config.drop_uniform_groups:
            return True
        rewards = [t.reward for t in group]
        return bool(rewards) and max(rewards) != min(rewards)

    # -- the step -----------------------------------------------------------------------------

    def train_step(self, batch: SequenceBatch, actor: TrainEngine, critic: TrainEngine | None = None,
                   ref: TrainEngine | None = None) -> dict[str, float]:
        """Update ``actor`` (and ``critic``) on ``batch``; returns stats for logging."""
        cfg = self.config
        self._check_inputs(batch, critic, ref)
        parts = self.minibatch_indices(batch.seqlens.tolist())

        batch = self.recompute(batch, actor, critic, ref)
        batch = self.compute_advantages(batch)
        prox_version = actor.run.weight_version.value  # the servers' weights: π_prox before this update
        batch = self.off_policy_corrections(batch, prox_version=prox_version)
        stats = self.batch_stats(batch, prox_version)

        self.step_stats = StatSums()
        minibatches = [batch.select(ix) for ix in parts]
        actor_steps, critic_steps = [], []
        for _ in range(cfg.ppo_epochs):
            for minibatch in minibatches:
                actor_steps.append(actor.train_batch(minibatch, self.policy_loss_fn, self.policy_loss_weight))
                if critic is not None:
                    critic_steps.append(critic.train_batch(minibatch, self.value_loss_fn, self.value_loss_weight))

        stats.update(self.step_stats.result())
        stats.update(_engine_stats("actor", actor_steps))
        stats.update(_engine_stats("critic", critic_steps))
        return stats

    # -- 1. recompute -------------------------------------------------------------------------

    def recompute(self, batch: SequenceBatch, actor: TrainEngine, critic: TrainEngine | None = None,
                  ref: TrainEngine | None = None) -> SequenceBatch:
        """A copy of ``batch`` with ``prox_logprobs`` / ``ref_logprobs`` / ``values`` as the config needs."""
        cfg = self.config
        tokens = dict(batch.tokens)
        if cfg.prox_logprobs == "recompute":
            tokens["prox_logprobs"] = _on(batch, actor.forward(batch, temperature=cfg.temperature))
        elif cfg.prox_logprobs == "behaviour":
            tokens["prox_logprobs"] = batch["logprobs"]
        if cfg.needs_ref:
            assert ref is not None  # _check_inputs: needs_ref asks for a ref engine
            tokens["ref_logprobs"] = _on(batch, ref.forward(batch, temperature=cfg.temperature))
        if critic is not None:
            tokens["values"] = adv_fns.state_values(_on(batch, critic.forward(batch)), batch.position_ids)
        return SequenceBatch(batch.cu_seqlens, tokens, dict(batch.seqs))

    # -- 2. advantages ------------------------------------------------------------------------

    def compute_advantages(self, batch: SequenceBatch) -> SequenceBatch:
        """A copy of ``batch`` with ``advantages`` and ``returns`` [T] (see :mod:`areal_grpo.advantages`)."""
        cfg = self.config
        loss_mask, seq_index, num_seqs = batch["loss_mask"], batch.seq_index, batch.num_seqs

        rewards = batch["rewards"].float()
        if cfg.overlong_buffer_ratio > 0 and cfg.max_response_tokens is not None:  # (the config requires it)
            lengths = adv_fns.response_lengths(loss_mask, seq_index, num_seqs)
            rewards = rewards + adv_fns.overlong_penalty(lengths, cfg.max_response_tokens, cfg.overlong_buffer_ratio,
                                                         cfg.overlong_penalty_factor)
        rewards = adv_fns.shape_rewards(rewards, cfg.reward_bias, cfg.reward_scaling, cfg.reward_clip)
        rewards = adv_fns.normalize_rewards(
            rewards, batch["group_index"], mean_level=cfg.reward_norm_mean,
            leave_one_out=cfg.reward_norm_leave_one_out, std_level=cfg.reward_norm_std,
            unbiased=cfg.norm_unbiased_std, eps=cfg.norm_eps)

        kl_penalty = None
        if cfg.kl_reward_coef > 0:
            old_logp = batch.tokens.get("prox_logprobs", batch["logprobs"])
            kl_penalty = -cfg.kl_reward_coef * adv_fns.kl_estimate(old_logp, batch["ref_logprobs"],
                                                                   cfg.kl_reward_estimator, mask=loss_mask)
        token_rewards = adv_fns.token_rewards(rewards, loss_mask, seq_index, kl_penalty)

        values = batch.tokens.get("values", torch.zeros_like(token_rewards))
        advantages, returns = adv_fns.gae(token_rewards, values, loss_mask, batch.cu_seqlens, cfg.gamma, cfg.gae_lambda)
        if cfg.advantage_norm:
            advantages = adv_fns.whiten(advantages, loss_mask, cfg.norm_unbiased_std, cfg.norm_eps)

        tokens = {**batch.tokens, "advantages": advantages, "returns": returns}
        return SequenceBatch(batch.cu_seqlens, tokens, dict(batch.seqs))

    # -- 3. off-policy corrections ------------------------------------------------------------

    def off_policy_corrections(self, batch: SequenceBatch, prox_version: int) -> SequenceBatch:
        """A copy of ``batch`` with ``update_mask`` and ``behav_weights`` (or ``prox_alpha``)."""
        cfg = self.config
        tokens = dict(batch.tokens)
        loss_mask = batch["loss_mask"] > 0
        if "prox_logprobs" not in tokens:  # log-linear: weights need π_θ, computed in the loss
            tokens["prox_alpha"] = loglinear_alpha(batch["versions"], prox_version)
            tokens["update_mask"] = loss_mask.float()
            return SequenceBatch(batch.cu_seqlens, tokens, dict(batch.seqs))

        weights, keep = behaviour_weights(
            batch["prox_logprobs"], batch["logprobs"], loss_mask, batch.seq_index, batch.num_seqs,
            mode=cfg.behav_weight_mode, level=cfg.behav_weight_level, lower=cfg.behav_weight_lower,
            upper=cfg.behav_weight_upper)
        if cfg.m2_threshold is not None:
            keep = m2po_keep(batch["logprobs"], batch["prox_logprobs"], keep, cfg.m2_threshold)
        tokens["behav_weights"] = weights
        tokens["update_mask"] = keep.float()
        return SequenceBatch(batch.cu_seqlens, tokens, dict(batch.seqs))

    # -- 4. update ----------------------------------------------------------------------------

    def minibatch_indices(self, seqlens: list[int]) -> list[list[int]]:
        """Sequence indices of ``n_minibatches`` parts of about equal token count: the longest
        sequence first, each to the part with the fewest tokens so far (ties: the first part);
        each part keeps batch order."""
        n = self.config.n_minibatches
        if n > len(seqlens):
            raise ArealError(f"algorithm {self.config.name!r}: n_minibatches={n} but the batch has only "
                             f"{len(seqlens)} sequences")
        parts: list[list[int]] = [[] for _ in range(n)]
        loads = [0] * n
        for i in sorted(range(len(seqlens)), key=lambda i: -seqlens[i]):
            lightest = loads.index(min(loads))
            parts[lightest].append(i)
            loads[lightest] += seqlens[i]
        return [sorted(p) for p in parts]

    def policy_loss_fn(self, logprobs: torch.Tensor, entropy: torch.Tensor, mb: SequenceBatch):
        """The actor's loss on one micro-batch: the sum that ``policy_loss_weight`` normalises."""
        cfg = self.config
        seq_index, num_seqs = mb.seq_index, mb.num_seqs
        normaliser_mask = mb["update_mask"] > 0
        behav = mb["logprobs"]
        if "behav_weights" in mb.tokens:
            prox, weights, keep = mb["prox_logprobs"], mb["behav_weights"], normaliser_mask
        else:
            prox = loglinear_prox_logprobs(behav, logprobs.detach(), mb["prox_alpha"])
            weights, keep = behaviour_weights(
                prox, behav, normaliser_mask, seq_index, num_seqs, mode=cfg.behav_weight_mode,
                level=cfg.behav_weight_level, lower=cfg.behav_weight_lower, upper=cfg.behav_weight_upper)
            self._add_behaviour_stats(weights, normaliser_mask, keep)

        weights = torch.where(keep, weights, 0.0)  # a masked token's w may be huge: keep it out of the graph
        advantages = mb["advantages"]
        log_ratio = torch.where(keep, logprobs - prox, 0.0)
        if cfg.importance_level == "sequence":
            log_ratio = sequence_level(log_ratio, keep, seq_index, num_seqs)
            advantages = sequence_level(advantages, keep, seq_index, num_seqs)
        ratio = bounded_exp(log_ratio)

        x = PolicyLossInput(logprobs=logprobs, prox_logprobs=prox, log_ratio=log_ratio, ratio=ratio,
                            advantages=advantages, mask=keep, seq_index=seq_index, num_seqs=num_seqs, config=cfg,
                            stats=self.step_stats)
        token_loss = self.policy_loss(x)
        if token_loss.shape != logprobs.shape:
            raise ArealError(f"algorithm {cfg.name!r}: policy loss {cfg.policy_loss!r} returned shape "
                             f"{tuple(token_loss.shape)}; it must return one loss per token, shape "
                             f"{tuple(logprobs.shape)}")
        token_loss = weights * token_loss
        if cfg.entropy_coef > 0:
            token_loss = token_loss - cfg.entropy_coef * entropy
        if cfg.kl_loss_coef > 0:
            kl = adv_fns.kl_estimate(logprobs, mb["ref_logprobs"], cfg.kl_loss_estimator, mask=keep)
            token_loss = token_loss + cfg.kl_loss_coef * kl
            self.step_stats.add_mean("actor/kl_loss", kl, keep)

        # r - 1 - log r (KL(π_prox‖π_θ), Schulman's k3 with d = log π_prox - log π_θ)
        approx_kl = adv_fns.kl_estimate(prox, logprobs.detach(), "k3", mask=keep)
        self.step_stats.add_mean("actor/approx_kl", approx_kl, keep)
        self.step_stats.add_mean("actor/ratio", ratio, keep)
        self.step_stats.add_max("actor/ratio_max", ratio, keep)
        self.step_stats.add_mean("actor/entropy", entropy, keep)
        self.step_stats.add_mean("actor/token_loss", token_loss, keep)

        loss = aggregate(torch.where(keep, token_loss, 0.0), normaliser_mask, seq_index, num_seqs,
                         cfg.loss_aggregation)
        return loss, {}

    def policy_loss_weight(self, mb: SequenceBatch) -> float:
        """This micro-batch's share of the actor loss normaliser (see :func:`areal_grpo.losses.aggregate`)."""
        return aggregate_weight(mb["update_mask"] > 0, mb.seq_index, mb.num_seqs, self.config.loss_aggregation,
                                self.config.loss_norm_tokens)

    def value_loss_fn(self, values: torch.Tensor, entropy: torch.Tensor, mb: SequenceBatch):
        """The critic's loss on one micro-batch (``values`` [t]: the engine's per-position outputs): a token sum."""
        mask = mb["loss_mask"] > 0
        values = adv_fns.state_values(values, mb.position_ids)
        token_loss, clipped = value_loss(values, mb["values"], mb["returns"], self.config.value_clip)
        self.step_stats.add_mean("critic/value_loss", token_loss, mask)
        self.step_stats.add_mean("critic/clip_fraction", clipped.float(), mask)
        return aggregate(token_loss, mask, mb.seq_index, mb.num_seqs, "token_mean"), {}

    def value_loss_weight(self, mb: SequenceBatch) -> float:
        """The critic loss is a mean over every loss token of the global batch."""
        return float((mb["loss_mask"] > 0).sum())

    # -- 5. stats -----------------------------------------------------------------------------

    def batch_stats(self, batch: SequenceBatch, prox_version: int) -> dict[str, float]:
        """What the batch looked like before the update (identical on every rank)."""
        cfg = self.config
        loss_mask = batch["loss_mask"] > 0
        update_mask = batch["update_mask"] > 0
        rewards = batch["rewards"].float()
        adv = batch["advantages"][loss_mask]
        lengths = adv_fns.response_lengths(batch["loss_mask"], batch.seq_index, batch.num_seqs)
        stats = {
            "n_seqs": float(batch.num_seqs),
            "n_loss_tokens": float(loss_mask.sum()),
            "n_update_tokens": float(update_mask.sum()),
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std(correction=0)),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            **_summary("advantage", adv),
        }
        generated = loss_mask & (batch["versions"] >= 0) if "versions" in batch.tokens else loss_mask[:0]
        if generated.any():
            lag = (prox_version - batch["versions"][generated]).float()
            stats.update({"version_lag/mean": float(lag.mean()), "version_lag/max": float(lag.max())})
        n_loss = max(1.0, float(loss_mask.sum()))
        if "behav_weights" in batch.tokens and cfg.behav_weight_mode != "none":
            w = batch["behav_weights"][loss_mask]
            in_range = (w >= cfg.behav_weight_lower) & (w <= cfg.behav_weight_upper)
            behav_masked = float((~in_range).sum()) if cfg.behav_weight_mode == "mask" else 0.0
            stats.update({"behav_weight/mean": float(w.mean()) if w.numel() else 0.0,
                          "behav_weight/max": float(w.max()) if w.numel() else 0.0,
                          "behav_weight/masked_fraction": behav_masked / n_loss})
            if cfg.m2_threshold is not None:
                stats["m2po/masked_fraction"] = (float(loss_mask.sum() - update_mask.sum()) - behav_masked) / n_loss
        if "ref_logprobs" in batch.tokens:
            old = batch.tokens.get("prox_logprobs", batch["logprobs"])
            kl_ref = adv_fns.kl_estimate(old, batch["ref_logprobs"], "k3", mask=loss_mask)
            stats["kl_ref/mean"] = float(kl_ref[loss_mask].mean())
        if "values" in batch.tokens:
            stats["critic/values_mean"] = float(batch["values"][loss_mask].mean())
            stats["critic/returns_mean"] = float(batch["returns"][loss_mask].mean())
        return stats

    def _add_behaviour_stats(self, weights: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> None:
        if self.config.behav_weight_mode == "none":
            return
        self.step_stats.add_mean("behav_weight/mean", weights, mask)
        self.step_stats.add_max("behav_weight/max", weights, mask)
        self.step_stats.add_mean("behav_weight/masked_fraction", (~keep).float(), mask)

    # -- checks -------------------------------------------------------------------------------

    def _check_inputs(self, batch: SequenceBatch, critic, ref) -> None:
        cfg, name = self.config, self.config.name
        missing = [f for f in REQUIRED_FIELDS if f not in batch.tokens and f not in batch.seqs]
        if cfg.prox_logprobs == "loglinear" and "versions" not in batch.tokens:
            missing.append("versions")
        if missing:
            raise ArealError(f"algorithm {name!r}: the batch lacks {missing} (build it with "
                             "SequenceBatch.from_trajectories)")
        if cfg.use_critic and critic is None:
            raise ArealError(f"algorithm {name!r} has use_critic=true and needs a critic engine: add a `critic:` "
                             "section to the run config")
        if not cfg.use_critic and critic is not None:
            raise ArealError(f"algorithm {name!r} has use_critic=false but a critic engine was given: remove the "
                             "`critic:` section or set algorithm.use_critic=true")
        if cfg.needs_ref and ref is None:
            raise ArealError(f"algorithm {name!r} has kl_reward_coef={cfg.kl_reward_coef}, kl_loss_coef="
                             f"{cfg.kl_loss_coef} and needs a reference engine: add a `ref:` section to the run "
                             "config or set both coefficients to 0")


def _on(batch: SequenceBatch, x: torch.Tensor) -> torch.Tensor:
    """An engine's output [T] as a float tensor beside the batch's own tensors."""
    return x.detach().float().to(batch.cu_seqlens.device)


def _summary(prefix: str, x: torch.Tensor) -> dict[str, float]:
    if x.numel() == 0:
        return {f"{prefix}/{k}": 0.0 for k in ("mean", "std", "min", "max")}
    return {f"{prefix}/mean": float(x.mean()), f"{prefix}/std": float(x.std(correction=0)),
            f"{prefix}/min": float(x.min()), f"{prefix}/max": float(x.max())}


def _engine_stats(role: str, steps: list[dict[str, float]]) -> dict[str, float]:
    """Mean loss and grad norm over the optimizer steps of one train_step, and the last lr."""
    if not steps:
        return {}
    out = {}
    for key in ("loss", "grad_norm"):
        values = [float(s[key]) for s in steps if key in s]
        if values:
            out[f"{role}/{key}"] = sum(values) / len(values)
    if "lr" in steps[-1]:
        out[f"{role}/lr"] = float(steps[-1]["lr"])
    return out
