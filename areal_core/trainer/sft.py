"""``areal sft``: supervised fine-tuning with packed next-token NLL, through the train engine protocol.

    areal sft --config sft.yaml [dotted.key=value ...]

Each row becomes one sequence ``prompt tokens + completion tokens + eos``; the loss covers the
completion and the eos only. For a batch of B sequences packed end to end (T tokens, no padding)::

    loss = − Σ_t m_t · log π_θ(x_t | x_<t) / Σ_t m_t          m_t = 1 on completion tokens

normalised by the completion tokens of the whole batch (all micro-batches, all data-parallel
ranks): the engine divides the summed loss by the summed ``loss_weight_fn``. The prompt is
rendered exactly as the ``rlvr`` workflow renders it (chat template with the generation prompt,
no extra special tokens), so the fine-tuned model sees the same tokens in RL.

Data order: epoch e visits the rows in :class:`~areal_core.data.dataset.EpochDataLoader`'s seeded
order; step s takes rows ``[s·B, (s+1)·B)`` of the concatenated epochs. The run writes
``RUN_DIR/metrics.jsonl`` (``sft/loss``, ``sft/grad_norm``, ``sft/lr``, ``sft/tokens_per_s``,
``sft/epoch``; ``sft/eval_loss`` with a valid dataset) and exports the model to ``output_path``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from areal_core.config.loader import ResolvedConfig, load_config, save_resolved
from areal_core.config.schema import SFTConfig
from areal_core.errors import ArealError
from areal_core.logging import configure_logging, get_logger

log = get_logger(__name__)


def encode_example(row: dict[str, Any], tokenizer, cfg: SFTConfig) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) of one row: prompt (mask 0) + completion + eos (mask 1)."""
    sid = row.get("sample_id", "?")
    if cfg.messages_field in row:
        messages = list(row[cfg.messages_field])
        if not messages or messages[-1].get("role") != "assistant":
            raise ArealError(f"sft: row {sid!r}: the last of {cfg.messages_field!r} must be the assistant's message")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        completion = str(messages[-1]["content"])
    elif cfg.prompt_field in row and cfg.completion_field in row:
        prompt, completion = str(row[cfg.prompt_field]), str(row[cfg.completion_field])
        if cfg.chat_template:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)
    else:
        raise ArealError(f"sft: row {sid!r} has neither {cfg.prompt_field!r} + {cfg.completion_field!r} "
                         f"(prompt_field, completion_field) nor {cfg.messages_field!r}; its keys: {sorted(row)}")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target_ids = target_ids + [tokenizer.eos_token_id]
    if not target_ids:
        raise ArealError(f"sft: row {sid!r} has an empty completion and the tokenizer no eos token")
    return prompt_ids + target_ids, [0] * len(prompt_ids) + [1] * len(target_ids)


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


def nll_loss(logprobs, entropy, batch):  # noqa: ARG001 - the LossFn signature
    """Summed NLL of the masked tokens of one micro-batch (the engine divides by the global count)."""
    mask = batch["loss_mask"]
    return -(logprobs * mask).sum(), {"entropy": float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))}


def loss_tokens(batch) -> float:
    return float(batch["loss_mask"].sum())


class SFTTrainer:
    """Fine-tunes ``cfg.actor`` on ``cfg.train_dataset`` (see the module docstring)."""

    def __init__(self, cfg: ResolvedConfig, run_dir: str | Path, registry=None):
        self.cfg = cfg
        self.run: SFTConfig = cfg.run
        self.run_dir = Path(run_dir)
        self.registry = registry
        self.actor = None
        self.metrics = None

    def setup(self) -> None:
        from transformers import AutoTokenizer

        from areal_core.data.dataset import EpochDataLoader, load_rows
        from areal_core.metrics import MetricsLogger
        from areal_core.api.types import RunContext

        run = self.run
        self.tokenizer = AutoTokenizer.from_pretrained(run.model_path)
        rows = load_rows(run.train_dataset, "train_dataset")
        self.loader = EpochDataLoader(rows, seed=run.seed, shuffle=run.train_dataset.shuffle)
        self.examples = [encode_example(r, self.tokenizer, run) for r in rows]
        self.valid_examples = ([encode_example(r, self.tokenizer, run) for r in load_rows(run.valid_dataset, "valid_dataset")]
                               if run.valid_dataset else None)
        context = RunContext(run.model_path, run.seed, run.trainer.total_steps, self.run_dir)
        self.actor = self.cfg.create("actor", registry=self.registry, run=context)
        self.actor.initialize()
        self.metrics = MetricsLogger.create(self.cfg.of_kind("metric_sink"), self.run_dir, registry=self.registry)

    def batch_indices(self, step: int) -> tuple[list[int], int]:
        """(row indices of step ``step``, epoch of its first row)."""
        n, size = len(self.examples), self.run.trainer.batch_size
        out, epoch = [], None
        for position in range(step * size, (step + 1) * size):
            e = position // n
            epoch = e if epoch is None else epoch
            out.append(self._order(e)[position % n])
        return out, epoch

    def _order(self, epoch: int) -> list[int]:
        if getattr(self, "_order_epoch", None) != epoch:
            self._order_epoch, self._order_cache = epoch, self.loader.order(epoch)
        return self._order_cache

    def train(self) -> Path:
        """Run every step, evaluate, export; returns the exported model directory."""
        trainer = self.run.trainer
        start = time.perf_counter()
        for step in range(trainer.total_steps):
            t0 = time.perf_counter()
            indices, epoch = self.batch_indices(step)
            batch = pack([self.examples[i] for i in indices])
            stats = self.actor.train_batch(batch, nll_loss, loss_tokens)
            elapsed = time.perf_counter() - t0
            metrics = {"sft/loss": stats["loss"], "sft/grad_norm": stats["grad_norm"], "sft/lr": stats["lr"],
                       "sft/entropy": stats.get("entropy", float("nan")), "sft/epoch": float(epoch),
                       "sft/loss_tokens": stats["loss_weight"], "sft/tokens_per_s": batch.num_tokens / elapsed,
                       "timing/step_s": elapsed}
            done = step + 1
            if self.valid_examples and ((trainer.eval_every and done % trainer.eval_every == 0) or done == trainer.total_steps):
                metrics["sft/eval_loss"] = self.eval_loss()
            self.metrics.log(done, metrics)
            if done % trainer.log_every == 0 or done == trainer.total_steps:
                log.info("sft step", step=done, of=trainer.total_steps, loss=round(stats["loss"], 4),
                         eval_loss=round(metrics["sft/eval_loss"], 4) if "sft/eval_loss" in metrics else None,
                         elapsed_s=round(time.perf_counter() - start, 1))
        out = Path(self.run.output_path or self.run_dir / "export").expanduser()
        self.actor.export_hf(str(out))
        log.info("sft model exported", path=str(out), total_s=round(time.perf_counter() - start, 1))
        return out

    def eval_loss(self) -> float:
        """Mean NLL per completion token over the held-out rows (no update)."""
        import torch

        total = count = 0.0
        size = self.run.trainer.batch_size
        for i in range(0, len(self.valid_examples), size):
            batch = pack(self.valid_examples[i:i + size])
            logprobs = self.actor.forward(batch)
            mask = batch["loss_mask"].to(logprobs.device)
            total += float(-(logprobs * mask).sum())
            count += float(mask.sum())
        return total / max(count, 1.0)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.actor is not None:
            self.actor.destroy()
            self.actor = None


def run_sft(cfg: ResolvedConfig, registry=None) -> Path:
    """Everything ``areal sft`` does after loading the config; returns the exported model directory."""
    from areal_core.trainer.entry import quiet_libraries

    run = cfg.run
    run_dir = Path(run.fileroot).expanduser() / run.experiment_name / run.trial_name
    if (run_dir / "metrics.jsonl").exists():
        raise ArealError(f"{run_dir} already holds an SFT run (metrics.jsonl): choose another trial_name or delete it")
    problems = [f"{name}.path: {getattr(run, name).path!r} does not exist" for name in ("train_dataset", "valid_dataset")
                if getattr(run, name) is not None and not Path(getattr(run, name).path).expanduser().exists()]
    if not Path(run.model_path).expanduser().is_dir():
        problems.insert(0, f"model_path: {run.model_path!r} is not a directory")
    if problems:
        raise ArealError("invalid config:\n  " + "\n  ".join(problems))
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(level=run.logging.level, json_logs=run.logging.json_logs, file=run_dir / "log.jsonl")
    quiet_libraries()
    save_resolved(cfg, run_dir)
    trainer = SFTTrainer(cfg, run_dir, registry=registry)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        trainer.close()


def sft_main(argv: list[str] | None = None) -> int:
    """The ``areal sft`` command line."""
    parser = argparse.ArgumentParser(prog="areal sft", description="Supervised fine-tuning (packed NLL on completions).")
    parser.add_argument("--config", type=Path, help="YAML SFT config (areal_core.config.schema.SFTConfig)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. trainer.total_steps=50")
    args = parser.parse_args(argv)
    cfg = load_config(SFTConfig, config_path=args.config, overrides=args.overrides)
    out = run_sft(cfg)
    print(f"sft finished: model in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(sft_main())
