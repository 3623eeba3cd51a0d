"""The megatron engine's micro-batch layouts side by side: padded rows against packed rows.

    python benchmarks/bench_megatron_packing.py                       # quickstart-like: 3m model, 64 seqs of 20-48 tokens
    python benchmarks/bench_megatron_packing.py --workload long-tail  # log-normal lengths 16..512 (bench_packing's mix)

Two ``megatron`` engines (one process, t = p = 1) train the same tiny Qwen2 model
(``areal_core.testing.tiny``) on the same global batches with the same loss (token-mean NLL):

* **padded** (``pack_sequences: false``): one sequence per row, right-padded to the micro-batch's
  longest, megatron's own causal mask;
* **packed** (``pack_sequences: true``): sequences first-fit into rows as long as the longest,
  several per row under a block-diagonal causal mask (``areal_megatron/rows.py``).

Throughput counts real tokens only; the sides alternate step by step after one untimed warm-up
step each (``bench_packing.interleaved``), so a busy machine slows both alike. Without CUDA the
engine runs under the plugin's test-only CPU shim (``plugins/areal-megatron/tests/cpu_shim.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from bench_packing import interleaved, long_tail_batch

from areal_core.data.batch import SequenceBatch
from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import mask_count, nll_loss


def uniform_batch(n: int, low: int, high: int, seed: int, vocab: int = 500) -> SequenceBatch:
    """``n`` sequences of uniform lengths in [low, high] (a prompt plus a short answer)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(low, high + 1, (n,), generator=g)
    cu = torch.zeros(n + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(lens, 0)
    ids = torch.randint(0, vocab, (int(cu[-1]),), generator=g)
    return SequenceBatch(cu, {"input_ids": ids, "loss_mask": torch.ones(int(cu[-1]))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["quickstart", "long-tail"], default="quickstart")
    parser.add_argument("--size", default="3m", help="tiny model size: 0.2m | 3m | 18m")
    parser.add_argument("--seqs", type=int, default=64, help="sequences per training step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (plus one warm-up)")
    parser.add_argument("--max-tokens-per-mb", type=int, default=8192, help="micro-batch token budget (engine default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/areal-megatron/tests"))
        import cpu_shim

        cpu_shim.install()
    from areal_core.testing.engines import make_train_engine, run_context

    if args.workload == "quickstart":
        batches = [uniform_batch(args.seqs, 20, 48, seed=s) for s in range(args.steps + 1)]
    else:
        batches = [long_tail_batch(args.seqs, 16, 512, seed=s) for s in range(args.steps + 1)]
    real_tokens = sum(b.num_tokens for b in batches[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(tmp, size=args.size)
        engines = {side: make_train_engine("megatron", {"pack_sequences": side == "packed", "seed": 1,
                                                        "max_tokens_per_mb": args.max_tokens_per_mb,
                                                        "optimizer": {"lr": 1e-4, "gradient_clipping": 1.0}},
                                           run_context(path))
                   for side in ("padded", "packed")}
        shapes: dict[str, list[tuple[int, ...]]] = {side: [] for side in engines}

        def step(side):
            from areal_megatron import rows

            def run(batch):
                ix = tuple(range(batch.num_seqs))
                shapes[side].append(tuple(rows.build(batch, ix, torch.device("cpu"), side == "packed").ids.shape))
                return engines[side].train_batch(batch, nll_loss, mask_count)["loss"]
            return run

        try:
            results = interleaved({side: step(side) for side in engines}, batches)
        finally:
            for engine in engines.values():
                engine.destroy()
    lens = torch.cat([b.seqlens for b in batches])
    print(f"workload {args.workload}: model {args.size}, {args.seqs} seqs/step, {args.steps} timed steps, "
          f"{args.threads} threads; lengths min {int(lens.min())} median {int(lens.median())} max {int(lens.max())}")
    print(f"first timed step loss  padded {results['padded'][1][0]:.5f}  packed {results['packed'][1][0]:.5f}")
    print(f"{'':8}{'rows x length (whole batch, last step)':>40}{'seconds':>10}{'tokens/s':>12}")
    for side, (seconds, _) in results.items():
        print(f"{side:8}{str(shapes[side][-1]):>40}{seconds:>10.2f}{real_tokens / seconds:>12.0f}")
    print(f"packed / padded throughput: {results['padded'][0] / results['packed'][0]:.2f}x")


if __name__ == "__main__":
    main()
