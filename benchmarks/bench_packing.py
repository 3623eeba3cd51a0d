"""Training throughput: packed micro-batches (the fsdp engine) against padded batches.

    python benchmarks/bench_packing.py                 # 3m model, 64 sequences/step, 3 timed steps
    python benchmarks/bench_packing.py --size 0.2m --steps 2

Both sides train the same tiny model (``areal_core.testing.tiny``) on the same global batches of
a long-tail mix of sequence lengths (log-normal, clipped to [--min-len, --max-len]) with the same
loss (token-mean NLL over the global batch) and AdamW settings, one process:

* **padded**: the usual HF recipe: micro-batches of ``--padded-mb`` sequences in arrival order,
  right-padded to the longest sequence in the micro-batch, with an attention mask;
* **packed**: the ``fsdp`` engine: sequences packed end to end without padding into micro-batches
  of at most ``--max-tokens-per-mb`` tokens (first-fit-decreasing), position ids restarting per
  sequence.

Throughput counts only real tokens (what is trained on): tokens/s = Σ sequence lengths / wall
time of the train steps (after one untimed warm-up step each). The two sides alternate step by
step, so a busy machine slows both alike. The first-step losses are printed as a check that both
sides compute the same objective.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from areal_core.data.batch import SequenceBatch
from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import mask_count, nll_loss


def long_tail_batch(n: int, min_len: int, max_len: int, seed: int, vocab: int = 500) -> SequenceBatch:
    """``n`` sequences with log-normal lengths (median ~4·min_len), clipped; all tokens in the loss."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.exp(torch.randn(n, generator=g) * 1.0 + torch.log(torch.tensor(4.0 * min_len)))
    lens = lens.round().long().clamp(min_len, max_len)
    cu = torch.zeros(n + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(lens, 0)
    ids = torch.randint(0, vocab, (int(cu[-1]),), generator=g)
    return SequenceBatch(cu, {"input_ids": ids, "loss_mask": torch.ones(int(cu[-1]))})


class PaddedTrainer:
    """Plain HF training on right-padded micro-batches (the baseline)."""

    def __init__(self, model_path: str, lr: float, micro_batch: int):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(1)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.micro_batch = micro_batch
        self.padded_tokens = 0

    def train_batch(self, batch: SequenceBatch) -> float:
        from areal_fsdp.logprobs import token_logprobs_entropy

        total = float(batch["loss_mask"].sum())
        seqs = [batch["input_ids"][batch.cu_seqlens[i]:batch.cu_seqlens[i + 1]] for i in range(batch.num_seqs)]
        loss_sum = 0.0
        self.optimizer.zero_grad()
        for s in range(0, len(seqs), self.micro_batch):
            group = seqs[s:s + self.micro_batch]
            width = max(len(x) for x in group)
            ids = torch.zeros(len(group), width, dtype=torch.long)
            mask = torch.zeros(len(group), width, dtype=torch.long)
            for row, x in enumerate(group):
                ids[row, :len(x)], mask[row, :len(x)] = x, 1
            self.padded_tokens += ids.numel()
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            valid = mask[:, 1:].bool()  # predict token t+1 from t where t+1 is real
            logprobs, _ = token_logprobs_entropy(logits[:, :-1][valid], ids[:, 1:][valid])
            loss = -logprobs.sum()
            (loss / total).backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss_sum / total


def interleaved(steps: dict, batches) -> dict[str, tuple[float, list[float]]]:
    """Run each side's step on every batch, alternating sides batch by batch so both see the same
    machine load; the first batch is an untimed warm-up. Returns {side: (seconds, losses)}."""
    for step in steps.values():
        step(batches[0])
    seconds = {side: 0.0 for side in steps}
    losses: dict[str, list[float]] = {side: [] for side in steps}
    for batch in batches[1:]:
        for side, step in steps.items():
            start = time.perf_counter()
            losses[side].append(step(batch))
            seconds[side] += time.perf_counter() - start
    return {side: (seconds[side], losses[side]) for side in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3m", help="tiny model size: 0.2m | 3m | 18m")
    parser.add_argument("--seqs", type=int, default=64, help="sequences per training step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (plus one warm-up)")
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--padded-mb", type=int, default=8, help="sequences per padded micro-batch")
    parser.add_argument("--max-tokens-per-mb", type=int, default=2048, help="packed micro-batch token budget")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from areal_fsdp.config import FSDPEngineConfig
    from areal_fsdp.engine import FSDPEngine

    batches = [long_tail_batch(args.seqs, args.min_len, args.max_len, seed=s) for s in range(args.steps + 1)]
    real_tokens = sum(b.num_tokens for b in batches[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(make_tiny_model(tmp, size=args.size))
        padded = PaddedTrainer(path, lr=1e-4, micro_batch=args.padded_mb)
        engine = FSDPEngine(FSDPEngineConfig(path=path, seed=1, max_tokens_per_mb=args.max_tokens_per_mb,
                                             optimizer={"lr": 1e-4, "gradient_clipping": 1.0}))
        engine.initialize()
        n_mbs = []

        def packed_step(batch):
            stats = engine.train_batch(batch, nll_loss, mask_count)
            n_mbs.append(stats["n_micro_batches"])
            return stats["loss"]

        results = interleaved({"padded": padded.train_batch, "packed": packed_step}, batches)
        engine.destroy()
    (padded_s, padded_losses), (packed_s, packed_losses) = results["padded"], results["packed"]
    padded_total = padded.padded_tokens

    lens = torch.cat([b.seqlens for b in batches])
    print(f"model {args.size}, {args.seqs} seqs/step, {args.steps} timed steps, {args.threads} threads; "
          f"lengths min {int(lens.min())} median {int(lens.median())} mean {lens.float().mean():.0f} max {int(lens.max())}")
    print(f"padded: {args.padded_mb} seqs/micro-batch, {padded_total / sum(b.num_tokens for b in batches):.2f}x "
          f"tokens computed per real token | packed: budget {args.max_tokens_per_mb} tokens, "
          f"{sum(n_mbs) / len(n_mbs):.1f} micro-batches/step")
    print(f"first timed step loss  padded {padded_losses[0]:.4f}  packed {packed_losses[0]:.4f}")
    print(f"{'':8}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'padded':8}{padded_s:>10.2f}{real_tokens / padded_s:>12.0f}")
    print(f"{'packed':8}{packed_s:>10.2f}{real_tokens / packed_s:>12.0f}")
    print(f"packed / padded throughput: {padded_s / packed_s:.2f}x")


if __name__ == "__main__":
    main()
