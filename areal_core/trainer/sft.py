"""``areal sft``: supervised fine-tuning with packed next-token NLL, through the train engine protocol.

    areal sft --config sft.yaml [dotted.key=value ...]

Each row becomes one sequence. ``prompt`` + ``completion`` rows: ``prompt tokens + completion
tokens + eos``, the loss on the completion and the eos. ``messages`` rows: the whole conversation,
the loss on every assistant message (its content and the eos closing it), every other token being
context (:func:`areal_core.data.preference.encode_conversation`). For a batch packed end to end::

    loss = − Σ_t m_t · log π_θ(x_t | x_<t) / Σ_t m_t          m_t = 1 on target tokens

normalised by the target tokens of the whole batch (all micro-batches, all data-parallel ranks):
the engine divides the summed loss by the summed ``loss_weight_fn``. A text prompt is rendered
exactly as the ``rlvr`` workflow renders it (chat template with the generation prompt), so the
fine-tuned model sees the same tokens in RL.

The loop, data order, multi-rank runs, recovery and export are the offline loop's
(:mod:`areal_core.trainer.offline`). Metrics: ``sft/loss``, ``sft/grad_norm``, ``sft/lr``,
``sft/entropy``, ``sft/loss_tokens``, ``sft/tokens_per_s``, ``sft/epoch``; ``sft/eval_loss``
with a valid dataset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from areal_core.config.loader import ResolvedConfig
from areal_core.config.schema import SFTConfig
from areal_core.data.preference import encode_conversation, encode_prompt_completion
from areal_core.errors import ArealError


def encode_example(row: dict[str, Any], tokenizer, cfg: SFTConfig, where: str = "") -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) of one row (see the module docstring)."""
    where = where or f"sft: row {row.get('sample_id', '?')!r}"
    if cfg.messages_field in row:
        messages = row[cfg.messages_field]
        if not isinstance(messages, list):
            raise ArealError(f"{where}: field {cfg.messages_field!r} must be a list of messages, got "
                             f"{type(messages).__name__}")
        return encode_conversation(tokenizer, list(messages), f"{where}: field {cfg.messages_field!r}")
    if cfg.prompt_field in row and cfg.completion_field in row:
        return encode_prompt_completion(tokenizer, str(row[cfg.prompt_field]), str(row[cfg.completion_field]),
                                        cfg.chat_template)
    raise ArealError(f"{where} has neither {cfg.prompt_field!r} + {cfg.completion_field!r} "
                     f"(prompt_field, completion_field) nor {cfg.messages_field!r}; its keys: {sorted(row)}")


def pack(examples: list[tuple[list[int], list[int]]]):
    """A :class:`SequenceBatch` of ``examples`` with token fields ``input_ids`` and ``loss_mask``."""
    import torch

    from areal_core.data.batch import SequenceBatch

    lens = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.long)
    cu = torch.zeros(len(examples) + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(lens, 0)
    return SequenceBatch(cu, tokens={
        "input_ids": torch.tensor([t for ids, _ in examples for t in ids], dtype=torch.long),
        "loss_mask": torch.tensor([m for _, mask in examples for m in mask], dtype=torch.float32),
    })


def nll_loss(logprobs, entropy, batch):
    """Summed NLL of the masked tokens of one micro-batch (the engine divides by the global count)."""
    mask = batch["loss_mask"]
    return -(logprobs * mask).sum(), {"entropy": float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))}


def loss_tokens(batch) -> float:
    return float(batch["loss_mask"].sum())


class SFTObjective:
    """The SFT objective of the offline loop (:class:`areal_core.trainer.offline.Objective`)."""

    prefix = "sft"

    def __init__(self, cfg: ResolvedConfig, tokenizer, command: str = "sft", registry=None):
        self.config: SFTConfig = cfg.run
        self.tokenizer = tokenizer

    def encode(self, row: dict[str, Any], where: str) -> tuple[list[int], list[int]]:
        return encode_example(row, self.tokenizer, self.config, where=f"sft: {where}")

    def prepare(self, trainer) -> None:
        return None

    def train_step(self, actor, examples, indices) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = pack(examples)
        stats = actor.train_batch(batch, nll_loss, loss_tokens)
        return {"sft/loss": stats["loss"], "sft/grad_norm": stats["grad_norm"], "sft/lr": stats["lr"],
                "sft/entropy": stats.get("entropy", float("nan")), "sft/loss_tokens": stats["loss_weight"],
                "sft/tokens_per_s": batch.num_tokens / (time.perf_counter() - t0)}

    def evaluate(self, actor, examples, batch_size: int) -> dict[str, float]:
        """``loss``: mean NLL per target token over the held-out rows (no update)."""
        total = count = 0.0
        for i in range(0, len(examples), batch_size):
            batch = pack(examples[i:i + batch_size])
            logprobs = actor.forward(batch)
            mask = batch["loss_mask"].to(logprobs.device)
            total += float(-(logprobs * mask).sum())
            count += float(mask.sum())
        return {"loss": total / max(count, 1.0)}


def run_sft(cfg: ResolvedConfig, registry=None) -> Path:
    """Everything ``areal sft`` does after loading the config; returns the exported model directory."""
    from areal_core.trainer.offline import run_offline

    return run_offline("sft", cfg, registry=registry)
