"""areal against TRL's ``GRPOTrainer`` on the quickstart workload: samples/s and the greedy eval.

    bash examples/quickstart.sh                       # once: the data and the SFT model under runs/quickstart
    pip install -c constraints.txt trl                # TRL 1.16 installs beside areal's pins
    python benchmarks/bench_vs_trl.py                 # 30 steps each, areal then TRL
    python benchmarks/bench_vs_trl.py --steps 100 --repeats 2   # alternating areal, TRL, TRL, areal
    python benchmarks/bench_vs_trl.py --steps 100 --seeds 1,2,3 --pin-server   # the quickstart's length, 3 seeds
    python benchmarks/bench_vs_trl.py --steps 100 --pin-server --areal-set rollout.max_head_offpolicyness=0  # sync areal

Both sides start from the same SFT model (``--model``) and train on the same prompts
(``--data``/train.jsonl, shuffled by each side's seeded sampler) with the same recipe, the
quickstart's (examples/quickstart.yaml):

==========================  =====================================  ======================================
                            areal (``areal train``)                 TRL ``GRPOTrainer``
==========================  =====================================  ======================================
per step                    16 prompts × 8 samples, 2 minibatches   generation batch 128 (8 per prompt),
                            (2 optimizer steps)                     ``steps_per_generation=2`` (batch 64)
completion                  ≤ 8 new tokens, temperature 1.0         ``max_completion_length=8``, 1.0
advantage / loss            group mean/std, clip 0.2, token mean    ``scale_rewards="group"``, ε 0.2,
                            over the minibatch, no KL               ``loss_type="dapo"``, ``beta=0``
optimizer                   AdamW at the recipe's lr (``--lr``),    same (``lr_scheduler_type="linear"``);
                            10 warmup steps, linear decay to 0       ``max_grad_norm=1``
                            (``min_lr_ratio=0``), clip 1
reward                      ``arith`` (exact total)                 the same function
generation                  embedded server, asynchronous (η = 1)   HF ``generate`` in the trainer process
==========================  =====================================  ======================================

(areal's quickstart decays to 0.1·lr; here both decay to 0, the schedule TRL offers. The batch, samples,
completion length, minibatches, lr, warmup and clipping are read from examples/quickstart.yaml, so a
change to the recipe changes both sides; ``--lr`` sets both sides' lr.) Threads:
both sides get the whole machine: TRL one process with ``--threads`` torch threads; areal one
inference server with 1 thread beside a trainer with ``--threads`` torch threads, both free to
run on every core (they overlap in time). With ``--pin-server`` areal's server is pinned to the
first core and its trainer takes the other cores (``trainer.torch_threads`` unset), as the
quickstart itself now does (``inference.cpus: auto``): the whole machine still, split between the two. Each side runs in its own subprocess.

Measured: samples/s = steps × 128 / the training loop's wall time (areal: the sum of
``timing/step_s``, i.e. without server start and engine initialisation; TRL: ``trainer.train()``),
and the greedy accuracy of each final model on ``--data``/valid.jsonl with one evaluator
(``areal_arith.evaluate.greedy_accuracy``). The sides alternate in one invocation, one round per
seed of ``--seeds`` (× ``--repeats``); the summary gives each side's median and fastest samples/s
and its mean eval over the runs (one run's eval swings by ±0.1 with the seed, so compare means),
and the paired eval difference (each round's areal eval minus its TRL eval) with its standard
error. ``--areal-set KEY=VALUE`` changes the areal side's recipe (e.g. η = 0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# The recipe both sides share is the quickstart's, read from its config so the two cannot drift apart.
RECIPE = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
PROMPTS, SAMPLES = RECIPE["rollout"]["batch_size"], RECIPE["workflow"]["n_samples"]
MAX_NEW, TEMPERATURE = RECIPE["workflow"]["max_new_tokens"], RECIPE["workflow"]["temperature"]
N_MINIBATCHES = RECIPE["algorithm"]["n_minibatches"]
LR, WARMUP = RECIPE["actor"]["optimizer"]["lr"], RECIPE["actor"]["optimizer"]["warmup_steps"]
GRAD_CLIP = RECIPE["actor"]["optimizer"]["gradient_clipping"]


def run_areal(args, out: Path) -> dict:
    """One ``areal train`` run of the quickstart recipe (no in-run eval); the final export is the model."""
    from areal_core.config.loader import load_config
    from areal_core.metrics import read_metrics
    from areal_core.trainer.entry import run_training

    overrides = [f"fileroot={out}", "experiment_name=vs_trl", "trial_name=areal", f"model_path={args.model}",
                 f"seed={args.seed}", f"train_dataset.path={args.data / 'train.jsonl'}", "valid_dataset=null",
                 f"trainer.total_steps={args.steps}", "trainer.checkpoint_every=0", "actor.optimizer.min_lr_ratio=0",
                 f"actor.optimizer.lr={args.lr}",  # its schedule spans the run: steps × N_MINIBATCHES
                 "logging.level=warning"]
    if args.pin_server:  # the server on the first core; the trainer's threads: trainer.torch_threads' default
        overrides += [f"inference.cpus=[{min(os.sched_getaffinity(0))}]", "trainer.torch_threads=null"]
    else:  # the server and the trainer's --threads threads share every core
        overrides += ["inference.cpus=null"]
    overrides += args.areal_set
    cfg = load_config(config_path=REPO / "examples" / "quickstart.yaml", overrides=overrides, env_prefix=None)
    run_dir = run_training(cfg)
    rows = [r for r in read_metrics(run_dir) if "timing/step_s" in r]
    return {"loop_s": sum(r["timing/step_s"] for r in rows), "samples": sum(r["train/n_seqs"] for r in rows),
            "model": str(run_dir / "export" / f"step{args.steps}"),
            "train_reward": sum(r["train/reward/mean"] for r in rows[-10:]) / len(rows[-10:])}


def run_trl(args, out: Path) -> dict:
    """TRL's GRPOTrainer with the same recipe (see the module docstring)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from areal_arith.evaluate import read_rows
    from areal_arith.reward import ArithReward, ArithRewardConfig

    verifier = ArithReward(ArithRewardConfig(name="arith"))
    rewards: list[float] = []

    def arith(completions, answer, **_):
        scores = [verifier("", c[0]["content"], {"answer": a}) for c, a in zip(completions, answer)]
        rewards.extend(scores)
        return scores

    rows = read_rows(args.data / "train.jsonl")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in rows])
    config = GRPOConfig(
        output_dir=str(out / "trl"), use_cpu=True, seed=args.seed, bf16=False, report_to="none", save_strategy="no",
        logging_steps=10, disable_dropout=True, dataloader_num_workers=0,
        per_device_train_batch_size=PROMPTS * SAMPLES // N_MINIBATCHES, steps_per_generation=N_MINIBATCHES,
        num_generations=SAMPLES, max_completion_length=MAX_NEW, temperature=TEMPERATURE, num_iterations=1,
        scale_rewards="group", loss_type="dapo", beta=0.0, epsilon=0.2,
        learning_rate=args.lr, warmup_steps=WARMUP, lr_scheduler_type="linear", max_grad_norm=GRAD_CLIP, weight_decay=0.0,
        max_steps=args.steps * N_MINIBATCHES)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    trainer = GRPOTrainer(model=model, reward_funcs=arith, args=config, train_dataset=data, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    loop_s = time.perf_counter() - start
    trainer.save_model(str(out / "trl" / "final"))
    tokenizer.save_pretrained(str(out / "trl" / "final"))
    tail = rewards[-10 * PROMPTS * SAMPLES:]
    return {"loop_s": loop_s, "samples": float(len(rewards)), "model": str(out / "trl" / "final"),
            "train_reward": sum(tail) / max(1, len(tail))}


def side_main(args) -> int:
    """In the subprocess: train one side, evaluate its final model, print one JSON line."""
    import torch

    from areal_arith.evaluate import greedy_accuracy

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    result = (run_areal if args.side == "areal" else run_trl)(args, out)
    result["eval"] = greedy_accuracy(result["model"], args.data / "valid.jsonl")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "runs/quickstart/sft/export", help="the SFT model")
    ap.add_argument("--data", type=Path, default=REPO / "runs/quickstart/data", help="train.jsonl + valid.jsonl")
    ap.add_argument("--steps", type=int, default=30, help="RL steps (each 128 samples, 2 optimizer steps)")
    ap.add_argument("--repeats", type=int, default=1, help="passes over --seeds, alternating areal/TRL")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each side's trainer")
    ap.add_argument("--seeds", default="1", help="comma list: one run per side per seed")
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate of both sides (default: the quickstart's)")
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)  # a side subprocess's seed
    ap.add_argument("--pin-server", action="store_true",
                    help="areal: pin the inference server to the first core (inference.cpus) and leave the trainer's "
                         "threads to trainer.torch_threads' default (the other cores) instead of --threads")
    ap.add_argument("--areal-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the areal side only, after the recipe's (repeatable), e.g. "
                         "rollout.max_head_offpolicyness=0 for synchronous areal")
    ap.add_argument("--side", choices=["areal", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return side_main(args)
    for path in (args.model / "config.json", args.data / "train.jsonl", args.data / "valid.jsonl"):
        if not path.is_file():
            raise SystemExit(f"bench_vs_trl: {path} does not exist; run examples/quickstart.sh first or pass --model/--data")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, list[dict]] = {"areal": [], "trl": []}
    print(f"{args.steps} steps x {PROMPTS * SAMPLES} samples per side, lr {args.lr:g}, {args.threads} trainer threads"
          f"{' (areal: server pinned to the first core, trainer on the rest)' if args.pin_server else ''}, "
          f"model {args.model}{'; areal overrides: ' + ' '.join(args.areal_set) if args.areal_set else ''}", flush=True)
    seeds = [int(x) for x in args.seeds.split(",")] * args.repeats
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as tmp:
        for r, seed in enumerate(seeds):
            for side in ("areal", "trl") if r % 2 == 0 else ("trl", "areal"):
                out = Path(tmp) / f"{side}{r}"
                cmd = [sys.executable, __file__, "--side", side, "--out", str(out), "--model", str(args.model),
                       "--data", str(args.data), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--seed", str(seed), "--lr", str(args.lr)] + (["--pin-server"] if args.pin_server else [])
                cmd += [f"--areal-set={kv}" for kv in args.areal_set]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    raise SystemExit(f"bench_vs_trl: the {side} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
                res = json.loads(lines[-1][len("RESULT "):])
                results[side].append(res)
                print(f"{side:6} run {r} (seed {seed}): {res['samples']:.0f} samples in {res['loop_s']:.1f} s = "
                      f"{res['samples'] / res['loop_s']:.2f} samples/s; train reward (last 10 steps) "
                      f"{res['train_reward']:.3f}; greedy eval {res['eval']:.3f}", flush=True)
    rates = {side: [x["samples"] / x["loop_s"] for x in rs] for side, rs in results.items()}
    median = {side: statistics.median(r) for side, r in rates.items()}
    print(f"\nsamples/s, median of {len(seeds)}: areal {median['areal']:.2f}, TRL {median['trl']:.2f}, ratio areal/TRL "
          f"{median['areal'] / median['trl']:.2f}x (fastest: {max(rates['areal']) / max(rates['trl']):.2f}x)")
    for side, rs in results.items():
        evals = [x["eval"] for x in rs]
        spread = f" ± {statistics.stdev(evals):.3f}" if len(evals) > 1 else ""
        print(f"greedy eval on {args.data / 'valid.jsonl'} ({side}): mean {statistics.fmean(evals):.3f}{spread} "
              f"(" + ", ".join(f"{e:.3f}" for e in evals) + ")")
    if len(seeds) > 1:  # round r ran both sides on seeds[r]: compare them pair by pair
        diffs = [a["eval"] - t["eval"] for a, t in zip(results["areal"], results["trl"])]
        print(f"paired eval difference areal - TRL: mean {statistics.fmean(diffs):+.3f} ± "
              f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.3f} (standard error over {len(diffs)} pairs); areal higher "
              f"in {sum(d > 0 for d in diffs)}, equal in {sum(d == 0 for d in diffs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
