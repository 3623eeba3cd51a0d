"""Asynchronous (η ≥ 1) against synchronous (η = 0) RL: wall-clock for the same trained samples.

    python benchmarks/bench_async.py                  # 3m tiny model, 16 steps x 8 groups x 4 samples, eta 0,1,2,4, 3 passes
    python benchmarks/bench_async.py --size 0.2m --steps 48   # generation-bound: the server takes ~2.7x the trainer's time
    python benchmarks/bench_async.py --server-cpus 0 --trainer-cpus 1   # the default on a 2-core machine

All runs are full ``areal train`` runs (local scheduler, one embedded inference server, the fsdp
engine, grpo, disk weight sync after every step) on the same data and seed; only
``rollout.max_head_offpolicyness`` (η) differs. The inference server and the trainer run on
separate cores: the server is pinned with ``inference.cpus`` (every server thread,
``os.sched_setaffinity``), the trainer (this process) pins itself to ``--trainer-cpus``; by default
the first available core serves and the others train. The workload has long-tail generation lengths: each
prompt asks for a completion length drawn from a log-normal distribution (``ignore_eos``), so a
batch's generation time is set by its few longest completions.

Measured: the wall time of the training loop (the sum of ``timing/step_s``: generation wait +
train + weight sync; server start and engine initialisation are excluded, they are the same for
both), for exactly ``steps × batch × n_samples`` trained samples. Printed per η: the loop time,
samples/s and trained tokens/s with their ratios to η = 0 (every run trains the same number of
samples, but async runs train the ones that finish first, so fewer long ones: its tokens/s ratio
falls below its samples/s ratio), the mean version lag of trained tokens, and the
step-mean of the two overlap metrics every run logs per step: ``inference/busy_fraction`` (share
of the wall time with a generate request in flight) and ``timing/trainer_busy_fraction``
(train_s / step_s). With ``--per-step`` also each step's pair. The η values run in ``--repeats``
passes of alternating order (0,1,2,4 then 4,2,1,0 ...); a ratio is taken between runs of the same
pass, which ran minutes apart on the same machine, and the median over passes is printed with each
pass's ratio beside it.

Why async wins: with η = 0 the server idles while the trainer trains and the trainer idles while
the server generates, and in the tail of every batch the server decodes only the few longest
completions (a nearly empty batch: per-step overhead with little work). With η ≥ 1 the next
batches' episodes start as soon as capacity allows, so the server keeps a full batch while the
trainer trains, and long completions straddle steps instead of stalling them (their tokens are at
most η versions old). The overlap is bounded by the slower side: async throughput can reach at
most (gen + train) / max(gen, train) times the synchronous one, and only when the batch of η
versions ahead is kept full.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field

from areal_core import hookimpl
from areal_core.api.types import ModelRequest, SamplingParams, Trajectory
from areal_core.config.base import ComponentConfig
from areal_core.registry import Component
from areal_core.rollout.rlvr import all_or_cancel
from areal_core.rollout.sample_ids import sample_id_of


class LongTailConfig(ComponentConfig):
    n_samples: int = Field(4, ge=1, description="completions per prompt")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")


class LongTailWorkflow:
    """n completions of the prompt, each exactly ``sample["gen_len"]`` tokens long (eos ignored)."""

    def __init__(self, config: LongTailConfig, reward, tokenizer):
        self.config, self.reward, self.tokenizer = config, reward, tokenizer

    async def run_episode(self, engine, sample):
        ids = self.tokenizer(sample["prompt"], add_special_tokens=False)["input_ids"]
        sampling = SamplingParams(max_new_tokens=int(sample["gen_len"]), temperature=self.config.temperature,
                                  ignore_eos=True)
        sid, episode = sample_id_of(sample), uuid.uuid4().hex[:8]
        responses = await all_or_cancel([engine.agenerate(ModelRequest(ids, sampling, rid=f"{sid}/{episode}/{i}"))
                                         for i in range(self.config.n_samples)])
        trajectories = []
        for resp in responses:
            text = self.tokenizer.decode(resp.output_ids, skip_special_tokens=True)
            outcome = await self.reward(sample["prompt"], text, sample)
            trajectories.append(Trajectory.from_response(resp, outcome.value, group_id=f"{sid}/{episode}", sample_id=sid))
        return trajectories


def letter_reward(prompt, completion, sample):
    return 1.0 if sample["letter"] in completion else 0.0


@hookimpl
def areal_register_workflows():
    return [Component("bench_longtail", LongTailWorkflow, LongTailConfig, "fixed long-tail completion lengths")]


@hookimpl
def areal_register_rewards():
    return [Component("bench_letter", lambda config: letter_reward, None, "letter appears in the completion")]


def long_tail_lengths(n: int, median: int, sigma: float, cap: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [max(4, min(cap, round(median * math.exp(rng.gauss(0.0, sigma))))) for _ in range(n)]


def write_dataset(path: Path, lengths: list[int]) -> None:
    rng = random.Random(1)
    with open(path, "w") as f:
        for i, n in enumerate(lengths):
            letter = rng.choice("etaoinshr")
            f.write(json.dumps({"id": f"s{i}", "prompt": f"Write {n} tokens with the letter {letter}.",
                                "letter": letter, "gen_len": n}) + "\n")


def run_once(root: Path, model: Path, eta: int, args, registry, trial: str) -> dict[str, Any]:
    from areal_core.config.loader import load_config
    from areal_core.metrics import read_metrics
    from areal_core.trainer.entry import run_training

    overrides = [
        "experiment_name=bench_async", f"trial_name={trial}", f"fileroot={root / 'runs'}", f"model_path={model}",
        "actor={name: fsdp, max_tokens_per_mb: 8192, optimizer: {lr: 1.0e-4}}", "algorithm={name: grpo}",
        f"inference={{name: embedded, n_servers: 1, threads: {args.server_threads}, "
        f"max_batch: {args.max_batch}, "
        f"cpus: {json.dumps(sorted(args.server_cpus)) if args.server_cpus else 'null'}}}",
        f"workflow={{name: bench_longtail, n_samples: {args.n_samples}}}", "reward={name: bench_letter}",
        f"rollout.batch_size={args.batch}", f"rollout.max_head_offpolicyness={eta}", "rollout.max_concurrent_rollouts=64",
        f"rollout.enforce_token_lag={str(args.enforce_token_lag and eta > 0).lower()}",
        f"train_dataset.path={root / 'train.jsonl'}", f"trainer.total_steps={args.steps}", "trainer.checkpoint_every=0",
        f"trainer.torch_threads={args.trainer_threads}",
        "logging.level=warning",
    ]
    cfg = load_config(overrides=overrides, env_prefix=None, registry=registry)
    start = time.perf_counter()
    run_dir = run_training(cfg, registry=registry)
    total = time.perf_counter() - start
    rows = [r for r in read_metrics(run_dir) if "timing/step_s" in r]
    loop_s = sum(r["timing/step_s"] for r in rows)
    tokens = sum(r["throughput/trained_tokens"] for r in rows)
    lag = sum(r["rollout/version_lag_mean"] * r["rollout/trained_tokens"] for r in rows) / max(1.0, tokens)
    audit = [json.loads(line) for line in (run_dir / "trained_samples.jsonl").read_text().splitlines()]
    newest_lag = max(a["version_trained_on"] - a["group_finished_version_min"] for a in audit)
    return {"loop_s": loop_s, "total_s": total, "samples": sum(r["train/n_seqs"] for r in rows), "tokens": tokens,
            "generated": rows[-1]["inference/output_tokens"], "interruptions": rows[-1]["inference/interruptions"],
            "requeued": rows[-1]["rollout/requeued"],
            "tokens_per_s": tokens / loop_s, "gen_wait_s": sum(r["timing/gen_wait_s"] for r in rows),
            "train_s": sum(r["timing/train_s"] for r in rows), "lag": lag,
            "lag_max": max(r["rollout/version_lag_max"] for r in rows), "newest_lag_max": newest_lag,
            "server_busy": [r["inference/busy_fraction"] for r in rows],
            "trainer_busy": [r["timing/trainer_busy_fraction"] for r in rows]}


def parse_cpus(spec: str | None) -> set[int] | None:
    return {int(c) for c in spec.split(",")} if spec else None


def default_cpus(args) -> None:
    """Server on the first available core, trainer on the rest (no pinning with a single core)."""
    allowed = sorted(os.sched_getaffinity(0))
    if args.server_cpus is None and args.trainer_cpus is None and len(allowed) > 1:
        args.server_cpus, args.trainer_cpus = {allowed[0]}, set(allowed[1:])
    if args.server_cpus and args.trainer_cpus and args.server_cpus & args.trainer_cpus:
        print(f"note: server cores {sorted(args.server_cpus)} and trainer cores {sorted(args.trainer_cpus)} overlap")


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3m", choices=["0.2m", "3m", "18m"],
                        help="tiny model size (3m: generation and training take about equally long at eta=0)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="prompt groups per step (B)")
    parser.add_argument("--n-samples", type=int, default=4, help="completions per prompt")
    parser.add_argument("--etas", default="0,1,2,4", help="comma-separated η values (0 first: the baseline)")
    parser.add_argument("--median-tokens", type=int, default=32, help="median completion length")
    parser.add_argument("--sigma", type=float, default=1.2, help="log-normal σ of completion lengths")
    parser.add_argument("--max-tokens", type=int, default=768, help="longest completion")
    parser.add_argument("--repeats", type=int, default=3,
                        help="passes over the etas, alternating their order; ratios are per pass, then the median")
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=64, help="the server's decode batch (inference.max_batch)")
    parser.add_argument("--trainer-threads", type=int, default=1)
    parser.add_argument("--server-cpus", type=parse_cpus, help="cores of the inference server, e.g. 0 (default: the first)")
    parser.add_argument("--trainer-cpus", type=parse_cpus, help="cores of the trainer, e.g. 1 (default: the rest)")
    parser.add_argument("--per-step", action="store_true", help="print each step's server and trainer busy fraction")
    parser.add_argument("--enforce-token-lag", action="store_true",
                        help="async run with rollout.enforce_token_lag (every trained token lags <= eta)")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)

    import torch

    from areal_core.registry import build_registry, set_registry
    from areal_core.testing.tiny import make_tiny_model

    etas = sorted({int(e) for e in args.etas.split(",")} | {0})
    default_cpus(args)
    if args.trainer_cpus:
        for task in os.listdir("/proc/self/task"):  # this process is the trainer
            os.sched_setaffinity(int(task), args.trainer_cpus)
    torch.set_num_threads(args.trainer_threads)
    registry = build_registry(extra_plugins=[(sys.modules[__name__], "bench_async")])
    set_registry(registry)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_async_"))
    shutil.rmtree(root / "runs", ignore_errors=True)
    try:
        model = make_tiny_model(root / "model", size=args.size)
        # enough prompts that neither run wraps an epoch: (η + steps + 1)·B groups at most are started
        lengths = long_tail_lengths((max(etas) + args.steps + 2) * args.batch, args.median_tokens, args.sigma,
                                    args.max_tokens, seed=0)
        write_dataset(root / "train.jsonl", lengths)
        ordered = sorted(lengths)
        print(f"model {args.size}, {args.steps} steps x {args.batch} groups x {args.n_samples} samples; completion "
              f"lengths median {ordered[len(ordered) // 2]}, p90 {ordered[int(0.9 * len(ordered))]}, max {ordered[-1]}; "
              f"server cores {sorted(args.server_cpus or [])or 'any'}, trainer cores {sorted(args.trainer_cpus or []) or 'any'}")
        passes: list[dict[int, dict[str, Any]]] = []
        for repeat in range(args.repeats):
            passes.append({})
            for eta in etas if repeat % 2 == 0 else etas[::-1]:
                r = run_once(root, model, eta, args, registry, f"eta{eta}-{repeat}")
                print(f"eta={eta}: loop {r['loop_s']:.1f} s (gen wait {r['gen_wait_s']:.1f} s, train {r['train_s']:.1f} s), "
                      f"{r['samples']:.0f} samples, {r['tokens']:.0f} trained / {r['generated']:.0f} generated tokens, "
                      f"{r['interruptions']:.0f} interruptions; version lag of trained tokens mean {r['lag']:.2f} max "
                      f"{r['lag_max']:.0f}, of each group's newest token max {r['newest_lag_max']:.0f}"
                      + (f", {r['requeued']:.0f} groups regenerated" if r["requeued"] else ""), flush=True)
                if args.per_step:
                    print("  per step (server busy / trainer busy): " + "  ".join(
                        f"{a:.2f}/{b:.2f}" for a, b in zip(r["server_busy"], r["trainer_busy"])))
                passes[-1][eta] = r
        print(f"\nsame {passes[0][0]['samples']:.0f} trained samples per run; {args.repeats} alternating passes. Ratios "
              "to eta=0 are taken within each pass (its runs are neighbours in time) and the median over passes is "
              "shown; loop s, lag and busy fractions are medians over passes")
        print(f"{'eta':>4}{'loop s':>9}{'samples/s':>11}{'vs eta=0':>10}{'tok/s':>9}{'vs eta=0':>10}{'lag':>6}"
              f"{'server busy':>13}{'trainer busy':>14}   samples/s vs eta=0 per pass")
        for eta in etas:
            runs = [p[eta] for p in passes]
            ratios = [p[0]["loop_s"] / p[eta]["loop_s"] for p in passes]
            token_ratios = [p[eta]["tokens_per_s"] / p[0]["tokens_per_s"] for p in passes]
            loop_s = statistics.median([r["loop_s"] for r in runs])
            print(f"{eta:>4}{loop_s:9.1f}{statistics.median([r['samples'] / r['loop_s'] for r in runs]):11.2f}"
                  f"{statistics.median(ratios):9.2f}x{statistics.median([r['tokens_per_s'] for r in runs]):9.1f}{statistics.median(token_ratios):9.2f}x"
                  f"{statistics.median([r['lag'] for r in runs]):6.2f}{statistics.median([mean(r['server_busy']) for r in runs]):13.2f}"
                  f"{statistics.median([mean(r['trainer_busy']) for r in runs]):14.2f}   "
                  + " ".join(f"{x:.2f}x" for x in ratios))
    finally:
        set_registry(None)
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
