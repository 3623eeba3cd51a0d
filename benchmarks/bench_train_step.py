"""One RL train step of the quickstart: areal (fsdp engine + grpo) against a bare PyTorch step.

    python benchmarks/bench_train_step.py                      # quickstart shapes, 6 timed rounds
    python benchmarks/bench_train_step.py --model runs/quickstart/sft/export --rounds 10
    python benchmarks/bench_train_step.py --attn auto,sdpa     # also the dense block-diagonal mask
    python benchmarks/bench_train_step.py --attn auto,auto:unshared   # with and without prefix sharing
    python benchmarks/bench_train_step.py --profile step.json  # also a torch.profiler trace of one areal step

The workload is the quickstart's (examples/quickstart.yaml): 16 arithmetic prompts × 8 samples
in the ChatML template, completions of 1–8 tokens, the 3.1 M-parameter Qwen2 of ``areal-arith
prepare`` (or ``--model``), grpo with two minibatches (two optimizer steps per step), AdamW with
gradient clipping at 1.0, fp32, the engine's default attention (``--attn``), which shares each
prompt among its 8 samples (``prefix_sharing``, :mod:`areal_fsdp.prefix`; ``auto:unshared``: off).

* **areal**: ``PPOAlgorithm.train_step(batch, actor)`` on an initialized ``fsdp`` engine: exactly
  what the trainer times as ``timing/train_s`` (proximal-logprob recompute, advantages, two
  ``train_batch`` calls with the decoupled PPO loss and its stats).
* **bare**: the same model as a plain ``transformers`` module (no FSDP) and ``torch.optim.AdamW``:
  one no-grad forward of all 128 sequences, then per minibatch of 64 one forward + backward of a
  token-mean policy-gradient loss (−A·log π on completion tokens), ``clip_grad_norm_`` and an
  AdamW step. Sequences are right-padded into one [B, L] tensor with an attention mask (what
  TRL/HF do), i.e. the bare step computes over more (padded) tokens than areal's packed rows.

Both sides use the same threads (``--threads``, default the trainer's: all cores) and alternate
round by round in this one process, so a busy machine slows both alike; the medians and their
ratio are printed. On a shared machine expect ±10% between runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from areal_core.data.batch import SequenceBatch


def quickstart_batch(data: Path, tokenizer, n_prompts: int, n_samples: int, max_new: int, seed: int) -> SequenceBatch:
    """A quickstart-shaped packed batch: chat-templated prompts, random completions ending in eos."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()[:4 * n_prompts]]
    rows = rng.sample(rows, n_prompts)
    eos = tokenizer.eos_token_id
    ids, mask, logp, versions, rewards, groups, cu = [], [], [], [], [], [], [0]
    for g, row in enumerate(rows):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=True,
                                               add_generation_prompt=True, return_dict=False)
        for _ in range(n_samples):
            completion = [rng.randrange(3, tokenizer.vocab_size) for _ in range(rng.randint(0, max_new - 1))] + [eos]
            ids += list(prompt) + completion
            mask += [0.0] * len(prompt) + [1.0] * len(completion)
            logp += [0.0] * len(prompt) + [-rng.uniform(0.1, 3.0) for _ in completion]
            versions += [-1] * len(prompt) + [0] * len(completion)
            rewards.append(float(rng.random() < 0.5))
            groups.append(g)
            cu.append(len(ids))
    return SequenceBatch(torch.tensor(cu), {
        "input_ids": torch.tensor(ids), "loss_mask": torch.tensor(mask), "logprobs": torch.tensor(logp),
        "versions": torch.tensor(versions)}, {"rewards": torch.tensor(rewards), "group_index": torch.tensor(groups)})


class BareStep:
    """A plain transformers model + AdamW on right-padded rows (see the module docstring)."""

    def __init__(self, model_path: str, lr: float, n_minibatches: int):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.n_minibatches = n_minibatches

    @staticmethod
    def pad(batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lens = batch.seqlens.tolist()
        width = max(lens)
        ids = torch.zeros(len(lens), width, dtype=torch.long)
        attn = torch.zeros(len(lens), width, dtype=torch.long)
        loss = torch.zeros(len(lens), width)
        for row, (start, n) in enumerate(zip(batch.cu_seqlens[:-1].tolist(), lens)):
            ids[row, :n] = batch["input_ids"][start:start + n]
            attn[row, :n] = 1
            loss[row, :n] = batch["loss_mask"][start:start + n]
        return ids, attn, loss

    def step(self, batch: SequenceBatch) -> None:
        ids, attn, loss_mask = self.pad(batch)
        rewards = batch["rewards"]
        self.model.eval()
        with torch.no_grad():
            self.model(input_ids=ids, attention_mask=attn, use_cache=False)
        self.model.train()
        adv = (rewards - rewards.mean())[:, None].expand_as(loss_mask)
        rows = torch.arange(ids.shape[0]).chunk(self.n_minibatches)
        for part in rows:
            logits = self.model(input_ids=ids[part], attention_mask=attn[part], use_cache=False).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[part, 1:, None]).squeeze(-1)
            m = loss_mask[part, 1:]
            loss = -(adv[part, 1:] * logp * m).sum() / m.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()


def areal_side(model_path: str, attn: str, lr: float, n_minibatches: int):
    """An fsdp engine and grpo; ``attn``: an attn_implementation, ``:unshared`` appended for prefix_sharing off."""
    from areal_core.registry import build_registry
    from areal_core.testing.engines import make_train_engine, run_context

    registry = build_registry()
    attn, _, mode = attn.partition(":")
    options = {"attn_implementation": attn, "optimizer": {"lr": lr, "gradient_clipping": 1.0}}
    if mode == "unshared":
        options["prefix_sharing"] = False
    engine = make_train_engine("fsdp", options,
                               run_context(model_path, total_steps=1000), registry=registry)
    algorithm = registry.create("algorithm", "grpo", {"n_minibatches": n_minibatches})
    return engine, algorithm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="HF model dir (default: the untrained model of `areal-arith prepare`)")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds (each: one areal step and one bare step)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both sides")
    ap.add_argument("--attn", default="auto", help="the fsdp engine's attn_implementation; a comma list (auto,sdpa) "
                                                  "times one areal side per entry (the bare side: sdpa, padded); "
                                                  "NAME:unshared turns prefix sharing off")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--n-minibatches", type=int, default=2)
    ap.add_argument("--profile", help="write a torch.profiler chrome trace of one areal step here and print its top ops")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from areal_arith.cli import prepare

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(Path(tmp) / "data", n_sft=10)
        model_path = args.model or str(data / "model")
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        batch = quickstart_batch(data, tokenizer, args.prompts, args.samples, args.max_new_tokens, seed=0)
        lr = 1e-6  # small: the weights barely move, so every round sees the same shapes and values
        attns = args.attn.split(",")
        areal = {f"areal[{a}]": areal_side(model_path, a, lr, args.n_minibatches) for a in attns}
        bare = BareStep(model_path, lr, args.n_minibatches)
        padded = batch.num_seqs * int(batch.seqlens.max())
        print(f"batch: {batch.num_seqs} sequences, {batch.num_tokens} tokens packed ({padded} padded), "
              f"{int(batch['loss_mask'].sum())} loss tokens; {args.threads} threads; areal attention {args.attn}")

        sides = {name: partial(algorithm.train_step, batch, engine) for name, (engine, algorithm) in areal.items()}
        sides["bare"] = partial(bare.step, batch)
        for run in sides.values():  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides)[r % len(sides):] + list(sides)[:r % len(sides)]  # rotate who goes first
            for name in order:
                t0 = time.perf_counter()
                sides[name]()
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"{'':14}{'median s':>10}{'min s':>8}  rounds")
        for name, t in times.items():
            print(f"{name:14}{med[name]:10.3f}{min(t):8.3f}  " + " ".join(f"{x:.3f}" for x in t))
        for name in areal:
            print(f"ratio {name} / bare: {med[name] / med['bare']:.2f} (median), "
                  f"{min(times[name]) / min(times['bare']):.2f} (min)")

        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], with_stack=False, record_shapes=False) as prof:
                sides[next(iter(areal))]()
            prof.export_chrome_trace(args.profile)
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
        for engine, _ in areal.values():
            engine.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
