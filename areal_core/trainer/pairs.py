"""``areal dpo`` / ``areal rm``: a preference-pair loss through the train engine protocol.

    areal dpo --config dpo.yaml [dotted.key=value ...]       loss: dpo | ipo (causal LM, frozen reference)
    areal rm  --config rm.yaml  [dotted.key=value ...]       loss: bradley_terry (value-head engine)

A batch of P pairs is packed as 2P sequences ``c_1, r_1, c_2, r_2, ...`` (chosen, rejected). What
a sequence i contributes, ``x_i`` (float64), depends on the loss's ``input``:

* ``logprob``: ``Σ_t m_t log π_θ(x_t | x_<t) − ref_i``, the log-ratio over its answer tokens,
  with ``ref_i`` the same sum under the frozen reference (the ``ref`` engine, or the actor's own
  initial weights when there is none), computed once before training;
* ``score``: the engine's output at the sequence's last token (the eos after the answer), e.g. the
  value head of ``{name: fsdp, critic: true}``.

The loss ``L = (1/P) Σ_p ℓ(x_c(p), x_r(p))`` couples the two sequences of a pair, but an engine
may put them in different micro-batches or on different ranks. So each step is two passes:

1. ``actor.forward(batch)`` (no grad) gives every ``x_i`` and the exact loss; autograd on the
   float64 pair losses gives ``g_i = ∂ℓ/∂x_i`` per sequence;
2. ``actor.train_batch`` with the per-sequence loss ``Σ_i g_i · x_i(θ)`` normalised by P
   (the engine sums over micro-batches and ranks and divides by ``Σ loss_weight = P``).

``∇_θ Σ_i g_i x_i(θ) = Σ_i (∂L/∂x_i) ∇_θ x_i = ∇_θ L`` at the current weights, so the update is the
pair loss's own gradient, whatever the micro-batching; the price is one extra forward per step.

Metrics (prefix ``dpo/`` or ``rm/``; ``eval_`` on the held-out pairs, also at step 0): ``loss``,
``accuracy`` (pairs whose chosen reward is higher; a tie counts ½), ``margin`` (mean chosen − rejected reward),
``reward_chosen``, ``reward_rejected`` (β·log-ratio for DPO/IPO, the score for Bradley–Terry),
``grad_norm``, ``lr``, ``tokens_per_s``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from areal_core.config.loader import ResolvedConfig
from areal_core.config.schema import PairConfig
from areal_core.data.batch import SequenceBatch
from areal_core.data.preference import PreferenceFields, encode_pair
from areal_core.errors import ArealError
from areal_core.logging import get_logger

log = get_logger(__name__)

Encoded = tuple[list[int], list[int]]


def pack_pairs(pairs: list[tuple[Encoded, Encoded]]) -> SequenceBatch:
    """2P sequences ``c_1, r_1, ...`` with token fields ``input_ids``, ``loss_mask``."""
    from areal_core.trainer.sft import pack

    return pack([seq for pair in pairs for seq in pair])


def sequence_values(out: torch.Tensor, batch: SequenceBatch, input_kind: str) -> torch.Tensor:
    """[B] float64: Σ of ``out`` over each sequence's loss-mask tokens (``logprob``), or ``out``
    at each sequence's last token (``score``). ``out`` is [T], on any device; keeps the graph."""
    cu = batch.cu_seqlens.to(out.device)
    if input_kind == "score":
        return out[cu[1:] - 1].double()
    masked = out.double() * batch["loss_mask"].to(out.device).double()
    sums = torch.zeros(batch.num_seqs, dtype=torch.float64, device=out.device)
    return sums.index_add(0, batch.seq_index.to(out.device), masked)


def pair_metrics(loss_fn, x_c: torch.Tensor, x_r: torch.Tensor) -> dict[str, float]:
    """loss, accuracy, margin, reward_chosen, reward_rejected of P pairs (means)."""
    reward_c, reward_r = loss_fn.rewards(x_c, x_r)
    wins = (reward_c > reward_r).double() + 0.5 * (reward_c == reward_r).double()  # a tie is a coin flip
    return {"loss": float(loss_fn(x_c, x_r).mean()), "accuracy": float(wins.mean()),
            "margin": float((reward_c - reward_r).mean()), "reward_chosen": float(reward_c.mean()),
            "reward_rejected": float(reward_r.mean())}


class PairObjective:
    """The pair objective of the offline loop (:class:`areal_core.trainer.offline.Objective`)."""

    def __init__(self, cfg: ResolvedConfig, tokenizer, command: str, registry=None):
        self.prefix = command
        self.config: PairConfig = cfg.run
        self.tokenizer = tokenizer
        self.loss = cfg.create("loss", registry=registry)
        self.input = self.loss.input
        if self.input not in ("logprob", "score"):
            raise ArealError(f"pair loss {cfg.run.loss['name']!r}: input must be 'logprob' or 'score', got {self.input!r}")
        c = self.config
        self.fields = PreferenceFields(c.prompt_field, c.chosen_field, c.rejected_field, c.chat_template)
        self.ref_train: torch.Tensor | None = None  # [N, 2] float64 reference sums (chosen, rejected)
        self.ref_valid: torch.Tensor | None = None

    def encode(self, row: dict[str, Any], where: str) -> tuple[Encoded, Encoded]:
        return encode_pair(row, self.tokenizer, self.fields, f"{self.prefix}: {where}")

    # ------------------------------------------------------------------ reference
    def prepare(self, trainer) -> None:
        """Reference sums of every train and held-out pair, once, before any checkpoint is loaded."""
        if not self.loss.needs_reference:
            return
        if self.input != "logprob":
            raise ArealError(f"pair loss {self.config.loss['name']!r}: a reference needs input 'logprob'")
        ref = trainer.create("ref") if self.config.ref is not None else trainer.actor
        t0 = time.perf_counter()
        try:
            size = trainer.run.trainer.batch_size
            self.ref_train = self._reference(ref, trainer.examples, size)
            if trainer.valid_examples:
                self.ref_valid = self._reference(ref, trainer.valid_examples, size)
        finally:
            if ref is not trainer.actor:
                ref.destroy()
        log.info("reference log-probabilities computed", pairs=len(trainer.examples),
                 engine="ref" if self.config.ref is not None else "actor (initial weights)",
                 seconds=round(time.perf_counter() - t0, 1))

    def _reference(self, engine, pairs, size: int) -> torch.Tensor:
        parts = []
        for i in range(0, len(pairs), size):
            batch = pack_pairs(pairs[i:i + size])
            parts.append(sequence_values(engine.forward(batch), batch, "logprob").cpu().view(-1, 2))
        return torch.cat(parts)

    # ------------------------------------------------------------------ values
    def pair_inputs(self, actor, batch: SequenceBatch, ref: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_c, x_r) [P] float64 under the actor's current weights (no grad)."""
        x = sequence_values(actor.forward(batch), batch, self.input).cpu().view(-1, 2)
        if ref is not None:
            x = x - ref
        return x[:, 0], x[:, 1]

    # ------------------------------------------------------------------ train
    def train_step(self, actor, examples, indices) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = pack_pairs(examples)
        ref = self.ref_train[indices] if self.ref_train is not None else None
        x_c, x_r = self.pair_inputs(actor, batch, ref)
        x_c, x_r = x_c.requires_grad_(), x_r.requires_grad_()
        per_pair = self.loss(x_c, x_r)
        g_c, g_r = torch.autograd.grad(per_pair.sum(), (x_c, x_r))
        metrics = pair_metrics(self.loss, x_c.detach(), x_r.detach())
        batch.seqs["pair_grad"] = torch.stack([g_c, g_r], dim=1).reshape(-1)
        stats = actor.train_batch(batch, self.linearised_loss, pairs_in)
        p = self.prefix
        out = {f"{p}/{k}": v for k, v in metrics.items()}
        out.update({f"{p}/grad_norm": stats["grad_norm"], f"{p}/lr": stats["lr"],
                    f"{p}/tokens_per_s": batch.num_tokens / (time.perf_counter() - t0)})
        return out

    def linearised_loss(self, out: torch.Tensor, entropy, mb: SequenceBatch):
        """Σ_i g_i · x_i(θ) over the micro-batch's sequences: the pair loss's gradient (module docstring)."""
        grads = mb["pair_grad"].to(out.device).double()
        return (grads * sequence_values(out, mb, self.input)).sum(), {}

    # ------------------------------------------------------------------ eval
    def evaluate(self, actor, examples, batch_size: int) -> dict[str, float]:
        xs_c, xs_r = [], []
        for i in range(0, len(examples), batch_size):
            ref = self.ref_valid[i:i + batch_size] if self.ref_valid is not None else None
            x_c, x_r = self.pair_inputs(actor, pack_pairs(examples[i:i + batch_size]), ref)
            xs_c.append(x_c)
            xs_r.append(x_r)
        return pair_metrics(self.loss, torch.cat(xs_c), torch.cat(xs_r))


def pairs_in(mb: SequenceBatch) -> float:
    """The loss weight of a micro-batch: half its sequences (two per pair), so the global weight is P."""
    return 0.5 * mb.num_seqs
