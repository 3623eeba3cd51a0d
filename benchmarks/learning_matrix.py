"""Does every preset learn? The quickstart recipe for each algorithm preset and for η ∈ {0, 1, 2, 4}.

    bash examples/quickstart.sh                      # once: the data and the SFT model under runs/quickstart
    python benchmarks/learning_matrix.py             # every run below, 100 steps each (the quickstart's length)
    python benchmarks/learning_matrix.py --steps 20 --runs grpo,dapo,eta0   # a reduced matrix

Every run is ``areal train --config examples/quickstart.yaml`` from the same SFT model with one
change (all other settings are the quickstart's: 16 prompts × 8 samples, ≤ 8 new tokens, AdamW 3e-4
with warmup and linear decay over the run, two minibatches, disk weight sync):

* one run per preset at the quickstart's η = 1: ``grpo``, ``dr_grpo``, ``lite_ppo``, ``rloo``,
  ``reinforce_pp`` (with a ``ref:`` engine for its KL penalty), ``ppo`` (with a ``critic:`` fsdp
  engine, same optimizer), ``dapo`` (its dynamic filter drops groups with equal rewards;
  ``max_response_tokens`` = 8), ``gspo``, ``sapo``, ``m2po``;
* ``grpo`` at η = 0, 2 and 4 (``eta0``, ``eta2``, ``eta4``) with the decoupled objective (π_prox
  recomputed, behaviour weights masked outside [0, 5]);
* ``naive4``: ``grpo`` at η = 4 as naive PPO: the behaviour policy is the old policy
  (``prox_logprobs: behaviour``, ``behav_weight_mode: none``), no off-policy correction.

Measured per run: the greedy eval reward on the 200 held-out problems (the trainer's in-run eval)
at step 0, mid-run and at the end, the mean training reward of the first and last 5 steps, the
step-mean ``actor/approx_kl`` (k3 estimate of KL(π_prox‖π_θ) over the trained tokens: how far the
updates moved the policy) and the wall time. "learns" = the final eval is above the step-0 eval.
Writes ``--out``/matrix.md (the table), matrix.json and matrix.png (the eval curves). Runs
already in ``--out``/matrix.json with the same ``--steps`` are not run again (their rows are re-read from their run directories), so an
interrupted matrix resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRESETS = ["grpo", "dr_grpo", "lite_ppo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "sapo", "m2po"]
ENGINE = "{name: fsdp, optimizer: {lr: 3.0e-4, warmup_steps: 10, lr_scheduler: linear, min_lr_ratio: 0.1}}"


def run_overrides(name: str) -> tuple[str, int, str, list[str]]:
    """(algorithm, η, objective, extra overrides) of the run called ``name``."""
    if name in PRESETS:
        extra = {"reinforce_pp": ["ref={name: fsdp}"],
                 "ppo": ["critic=" + ENGINE.replace("name: fsdp,", "name: fsdp, critic: true,")],
                 "dapo": ["algorithm.max_response_tokens=8"]}.get(name, [])
        return name, 1, "decoupled", extra
    if name in ("eta0", "eta1", "eta2", "eta4"):
        return "grpo", int(name[3:]), "decoupled", []
    if name == "naive4":
        return "grpo", 4, "naive", ["algorithm.prox_logprobs=behaviour", "algorithm.behav_weight_mode=none"]
    raise SystemExit(f"learning_matrix: unknown run {name!r}; runs are {', '.join(all_runs())}")


def all_runs() -> list[str]:
    return PRESETS + ["eta0", "eta2", "eta4", "naive4"]


def train(name: str, args, out: Path) -> dict:
    from areal_core.config.loader import load_config
    from areal_core.trainer.entry import run_training

    algorithm, eta, objective, extra = run_overrides(name)
    overrides = [f"fileroot={out}", "experiment_name=matrix", f"trial_name={name}", f"model_path={args.model}",
                 f"seed={args.seed}", f"train_dataset.path={args.data / 'train.jsonl'}",
                 f"valid_dataset.path={args.data / 'valid.jsonl'}", f"algorithm.name={algorithm}",
                 "algorithm.n_minibatches=2", f"rollout.max_head_offpolicyness={eta}",
                 f"trainer.total_steps={args.steps}", f"trainer.eval_every={max(1, args.steps // 2)}",
                 "trainer.checkpoint_every=0", "logging.level=warning", *extra]
    if args.pin_server:  # server on the first core, the trainer's threads on the rest (trainer.torch_threads unset)
        overrides.append(f"inference.cpus=[{min(os.sched_getaffinity(0))}]")
    cfg = load_config(config_path=REPO / "examples" / "quickstart.yaml", overrides=overrides, env_prefix=None)
    start = time.perf_counter()
    run_dir = run_training(cfg)
    return summarize(name, run_dir, args.steps, time.perf_counter() - start)


def summarize(name: str, run_dir: Path, steps: int, wall_s: float) -> dict:
    """The matrix row of a finished run, from its metrics.jsonl (train reward: first vs last
    min(5, steps/2) steps)."""
    from areal_core.metrics import read_metrics

    algorithm, eta, objective, _ = run_overrides(name)
    rows = read_metrics(run_dir)
    evals = [(r["step"], r["eval/reward_mean"]) for r in rows if r.get("eval/reward_mean") is not None]
    train_rewards = [r["train/reward/mean"] for r in rows if "train/reward/mean" in r]
    k = max(1, min(5, len(train_rewards) // 2))
    return {"run": name, "algorithm": algorithm, "eta": eta, "objective": objective, "steps": steps,
            "evals": evals, "eval_start": evals[0][1], "eval_end": evals[-1][1],
            "train_first": sum(train_rewards[:k]) / k, "train_last": sum(train_rewards[-k:]) / k,
            "lag": sum(r.get("rollout/version_lag_mean", 0.0) for r in rows) / max(1, len(train_rewards)),
            "approx_kl": sum(r.get("actor/approx_kl", 0.0) for r in rows) / max(1, len(train_rewards)),
            "wall_s": wall_s}


def table(results: list[dict]) -> str:
    lines = ["| run | algorithm | η | objective | eval step 0 | eval mid | eval end | Δ eval | train reward first→last | "
             "mean lag | approx KL | learns | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mid = r["evals"][len(r["evals"]) // 2][1] if len(r["evals"]) > 2 else float("nan")
        delta = r["eval_end"] - r["eval_start"]
        lines.append(f"| {r['run']} | {r['algorithm']} | {r['eta']} | {r['objective']} | {r['eval_start']:.3f} | "
                     f"{mid:.3f} | {r['eval_end']:.3f} | {delta:+.3f} | {r['train_first']:.3f}→{r['train_last']:.3f} | "
                     f"{r['lag']:.2f} | {r.get('approx_kl', float('nan')):.4f} | {'yes' if delta > 0 else 'no'} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        steps, values = zip(*r["evals"])
        ax.plot(steps, values, marker="o", label=r["run"], linestyle="--" if r["objective"] == "naive" else "-")
    ax.set_xlabel("step")
    ax.set_ylabel("greedy eval reward (200 held-out problems)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "runs/quickstart/sft/export", help="the SFT model")
    ap.add_argument("--data", type=Path, default=REPO / "runs/quickstart/data", help="train.jsonl + valid.jsonl")
    ap.add_argument("--steps", type=int, default=100, help="RL steps per run")
    ap.add_argument("--runs", default=",".join(all_runs()), help="comma-separated runs (see the docstring)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pin-server", action="store_true", help="pin the inference server to the first core "
                                                              "(inference.cpus); the trainer takes the others")
    ap.add_argument("--out", type=Path, default=REPO / "runs/learning_matrix", help="runs, table and plot go here")
    args = ap.parse_args(argv)
    names = args.runs.split(",")
    for name in names:
        run_overrides(name)  # unknown names fail before any run
    for path in (args.model / "config.json", args.data / "train.jsonl", args.data / "valid.jsonl"):
        if not path.is_file():
            raise SystemExit(f"learning_matrix: {path} does not exist; run examples/quickstart.sh first or pass "
                             f"--model/--data")
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "matrix.json"
    done = {r["run"]: r for r in json.loads(results_file.read_text())} if results_file.is_file() else {}
    failed: dict[str, str] = {}
    for name in names:
        if name in done and done[name]["steps"] == args.steps:
            print(f"{name}: already in {results_file}, not run again")
            done[name] = summarize(name, args.out / "matrix" / name, args.steps, done[name]["wall_s"])
            continue
        shutil.rmtree(args.out / "matrix" / name, ignore_errors=True)  # a half-finished earlier attempt
        try:
            done[name] = train(name, args, args.out)
        except Exception as exc:  # noqa: BLE001 - one failed run (e.g. a lost server) does not stop the matrix
            failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name}: FAILED: {failed[name]}", flush=True)
            continue
        r = done[name]
        print(f"{name}: eval {r['eval_start']:.3f} -> {r['eval_end']:.3f}, train reward {r['train_first']:.3f} -> "
              f"{r['train_last']:.3f}, {r['wall_s']:.0f} s", flush=True)
        results_file.write_text(json.dumps(list(done.values()), indent=1))  # after each run: a crash keeps the rest
    results = [done[n] for n in names if n in done]
    notes = "".join(f"\n{name} failed: {why}\n" for name, why in failed.items())
    (args.out / "matrix.md").write_text(table(results) + notes)
    plot(results, args.out / "matrix.png")
    print("\n" + table(results) + notes + f"\nwrote {args.out / 'matrix.md'}, {results_file}, {args.out / 'matrix.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
