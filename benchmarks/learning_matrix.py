"""Does every preset learn? The quickstart recipe for each algorithm preset and for η ∈ {0, 1, 2, 4}.

    bash examples/quickstart.sh                      # once: the data and the SFT model under runs/quickstart
    python benchmarks/learning_matrix.py             # every run below, 100 steps each (the quickstart's length)
    python benchmarks/learning_matrix.py --steps 20 --runs grpo,dapo,eta0   # a reduced matrix
    python benchmarks/learning_matrix.py --runs eta4,naive4 --seeds 1,2,3     # three seeds each, averaged

Every run is ``areal train --config examples/quickstart.yaml`` from the same SFT model with one
change (all other settings are the quickstart's: 16 prompts × 8 samples, ≤ 8 new tokens, AdamW at
the quickstart's lr (1e-4) with warmup and linear decay over the run, two minibatches, disk weight sync):

* one run per preset at the quickstart's η = 1: ``grpo``, ``dr_grpo``, ``lite_ppo``, ``rloo``,
  ``reinforce_pp`` (with a ``ref:`` engine for its KL penalty), ``ppo`` (with a ``critic:`` fsdp
  engine, the actor's optimizer settings), ``dapo`` (its dynamic filter drops groups with equal rewards;
  ``max_response_tokens`` = 8), ``gspo``, ``sapo``, ``m2po``;
* ``grpo_lr3e-4``: ``grpo`` at lr 3e-4, the quickstart's lr until session 10 (it learned less, and
  less reliably, most of all at η ≥ 1: docs/performance.md);
* ``grpo`` at η = 0, 2 and 4 (``eta0``, ``eta2``, ``eta4``) with the decoupled objective (π_prox
  recomputed, behaviour weights masked outside [0, 5]);
* ``naive4``: ``grpo`` at η = 4 as naive PPO: the behaviour policy is the old policy
  (``prox_logprobs: behaviour``, ``behav_weight_mode: none``), no off-policy correction.

Measured per run: the greedy eval reward on the 200 held-out problems (the trainer's in-run eval)
every quarter of the run (the table shows step 0, mid-run and the end), the mean training reward of the first and last 5 steps, the
step-mean ``train/actor/approx_kl`` (k3 estimate of KL(π_prox‖π_θ) over the trained tokens: how far the
updates moved the policy) and the wall time. With several ``--seeds`` every run is repeated
once per seed and the table shows the seeds' mean (the final eval as mean ± std). "learns" = the
final eval is above the step-0 eval by more than 0.07 (two standard errors of one 200-problem eval;
on the seeds' mean, and counted per seed). Writes ``--out``/matrix.md (the table),
matrix.json (one row per run and seed) and matrix.png (the eval curves). Runs already in
``--out``/matrix.json with the same ``--steps`` and seed are not run again (their rows are
re-read from their run directories), so an interrupted matrix resumes and more seeds can be added;
``--table-only`` writes the table of what is there (a row averages the listed seeds it has).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PRESETS = ["grpo", "dr_grpo", "lite_ppo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "sapo", "m2po"]
LEARN_MARGIN = 0.07  # two standard errors of one 200-problem eval at p = 0.5: a smaller gain is noise
OPTIMIZER = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())["actor"]["optimizer"]
CRITIC = json.dumps({"name": "fsdp", "critic": True, "optimizer": OPTIMIZER})  # its schedule spans the run, as the actor's


def run_overrides(name: str) -> tuple[str, int, str, list[str]]:
    """(algorithm, η, objective, extra overrides) of the run called ``name``."""
    if name in PRESETS:
        extra = {"reinforce_pp": ["ref={name: fsdp}"],
                 "ppo": ["critic=" + CRITIC],
                 "dapo": ["algorithm.max_response_tokens=8"]}.get(name, [])
        return name, 1, "decoupled", extra
    if name == "grpo_lr3e-4":  # the quickstart's lr until session 10
        return "grpo", 1, "decoupled", ["actor.optimizer.lr=3.0e-4"]
    if name in ("eta0", "eta1", "eta2", "eta4"):
        return "grpo", int(name[3:]), "decoupled", []
    if name == "naive4":
        return "grpo", 4, "naive", ["algorithm.prox_logprobs=behaviour", "algorithm.behav_weight_mode=none"]
    raise SystemExit(f"learning_matrix: unknown run {name!r}; runs are {', '.join(all_runs())}")


def all_runs() -> list[str]:
    return PRESETS + ["grpo_lr3e-4", "eta0", "eta2", "eta4", "naive4"]


def train(name: str, seed: int, args, out: Path) -> dict:
    from areal_core.config.loader import load_config
    from areal_core.trainer.entry import run_training

    algorithm, eta, objective, extra = run_overrides(name)
    overrides = [f"fileroot={out}", "experiment_name=matrix", f"trial_name={name}-seed{seed}", f"model_path={args.model}",
                 f"seed={seed}", f"train_dataset.path={args.data / 'train.jsonl'}",
                 f"valid_dataset.path={args.data / 'valid.jsonl'}", f"algorithm.name={algorithm}",
                 "algorithm.n_minibatches=2", f"rollout.max_head_offpolicyness={eta}",
                 f"trainer.total_steps={args.steps}", f"trainer.eval_every={max(1, args.steps // 4)}",
                 "trainer.checkpoint_every=0", "logging.level=warning", *extra]
    cfg = load_config(config_path=REPO / "examples" / "quickstart.yaml", overrides=overrides, env_prefix=None)
    start = time.perf_counter()
    run_dir = run_training(cfg)
    return summarize(name, seed, run_dir, args.steps, time.perf_counter() - start)


def summarize(name: str, seed: int, run_dir: Path, steps: int, wall_s: float) -> dict:
    """The matrix row of one finished run, from its metrics.jsonl (train reward: first vs last
    min(5, steps/2) steps)."""
    from areal_core.metrics import read_metrics

    algorithm, eta, objective, _ = run_overrides(name)
    rows = read_metrics(run_dir)
    evals = [(r["step"], r["eval/reward_mean"]) for r in rows if r.get("eval/reward_mean") is not None]
    train_rewards = [r["train/reward/mean"] for r in rows if "train/reward/mean" in r]
    k = max(1, min(5, len(train_rewards) // 2))
    return {"run": name, "seed": seed, "run_dir": str(run_dir), "algorithm": algorithm, "eta": eta,
            "objective": objective, "steps": steps, "evals": evals, "eval_start": evals[0][1], "eval_end": evals[-1][1],
            "train_first": sum(train_rewards[:k]) / k, "train_last": sum(train_rewards[-k:]) / k,
            "lag": sum(r.get("rollout/version_lag_mean", 0.0) for r in rows) / max(1, len(train_rewards)),
            "approx_kl": sum(r.get("train/actor/approx_kl", 0.0) for r in rows) / max(1, len(train_rewards)),
            "wall_s": wall_s}


def mean_sd(xs: list[float]) -> str:
    """"0.612" for one value, "0.612 ± 0.041" (sample std) for several."""
    return f"{xs[0]:.3f}" if len(xs) == 1 else f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def eval_curve(seeds: list[dict]) -> list[tuple[int, float]]:
    """The eval reward at each eval step, averaged over the seeds that evaluated at that step."""
    by_step: dict[int, list[float]] = {}
    for r in seeds:
        for step, value in r["evals"]:
            by_step.setdefault(step, []).append(value)
    return [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]


def table(results: dict[str, list[dict]]) -> str:
    """One line per run, its seeds averaged (eval end: mean ± std over seeds when there are several)."""
    lines = ["| run | algorithm | η | objective | seeds | eval step 0 | eval mid | eval end | Δ eval | train reward "
             "first→last | mean lag | approx KL | learns | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for seeds in results.values():
        r, curve = seeds[0], eval_curve(seeds)
        mid = curve[len(curve) // 2][1] if len(curve) > 2 else float("nan")
        deltas = [x["eval_end"] - x["eval_start"] for x in seeds]
        learned = sum(d > LEARN_MARGIN for d in deltas)
        learns = ("yes" if statistics.fmean(deltas) > LEARN_MARGIN else "no") + (f" ({learned}/{len(seeds)} seeds)" if len(seeds) > 1 else "")
        lines.append(
            f"| {r['run']} | {r['algorithm']} | {r['eta']} | {r['objective']} | "
            f"{','.join(str(x['seed']) for x in seeds)} | {statistics.fmean([x['eval_start'] for x in seeds]):.3f} | {mid:.3f} | "
            f"{mean_sd([x['eval_end'] for x in seeds])} | {statistics.fmean(deltas):+.3f} | "
            f"{statistics.fmean([x['train_first'] for x in seeds]):.3f}→{statistics.fmean([x['train_last'] for x in seeds]):.3f} | "
            f"{statistics.fmean([x['lag'] for x in seeds]):.2f} | {statistics.fmean([x['approx_kl'] for x in seeds]):.4f} | {learns} | "
            f"{statistics.fmean([x['wall_s'] for x in seeds]):.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Eval curves in two panels: the presets at η = 1, and grpo across η (naive PPO dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (presets, etas) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = plt.get_cmap("tab20").colors
    for i, seeds in enumerate(results.values()):
        r = seeds[0]
        panels = ([presets] if r["eta"] == 1 and r["objective"] == "decoupled" else []) + \
                 ([etas] if r["algorithm"] == "grpo" else [])
        steps, values = zip(*eval_curve(seeds))
        label = r["run"] + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")
        for ax in panels:
            ax.plot(steps, values, marker="o", label=label, color=colors[i % len(colors)],
                    linestyle="--" if r["objective"] == "naive" else "-")
    presets.set_title("presets at η = 1")
    etas.set_title("grpo at η = 0, 1, 2, 4 (decoupled) and naive PPO at η = 4")
    presets.set_ylabel("greedy eval reward (200 held-out problems)")
    for ax in (presets, etas):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_done(results_file: Path, out: Path) -> dict[tuple[str, int], dict]:
    """The runs of an earlier invocation, by (run, seed); rows written before seeds were recorded are seed 1."""
    if not results_file.is_file():
        return {}
    done = {}
    for r in json.loads(results_file.read_text()):
        r.setdefault("seed", 1)
        r.setdefault("run_dir", str(out / "matrix" / r["run"]))
        done[r["run"], r["seed"]] = r
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "runs/quickstart/sft/export", help="the SFT model")
    ap.add_argument("--data", type=Path, default=REPO / "runs/quickstart/data", help="train.jsonl + valid.jsonl")
    ap.add_argument("--steps", type=int, default=100, help="RL steps per run")
    ap.add_argument("--runs", default=",".join(all_runs()), help="comma-separated runs (see the docstring)")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds: every run once per seed, the table averages")
    ap.add_argument("--out", type=Path, default=REPO / "runs/learning_matrix", help="runs, table and plot go here")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: the table and plot of the runs and seeds already in --out")
    args = ap.parse_args(argv)
    names = args.runs.split(",")
    for name in names:
        run_overrides(name)  # unknown names fail before any run
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"learning_matrix: --seeds {args.seeds!r}: expected comma-separated integers, e.g. 1,2,3") from None
    for path in (args.model / "config.json", args.data / "train.jsonl", args.data / "valid.jsonl"):
        if not path.is_file():
            raise SystemExit(f"learning_matrix: {path} does not exist; run examples/quickstart.sh first or pass "
                             f"--model/--data")
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "matrix.json"
    done = load_done(results_file, args.out)
    failed: dict[str, str] = {}
    for seed in seeds:
        for name in names:
            key = (name, seed)
            if key in done and done[key]["steps"] == args.steps:
                print(f"{name} seed {seed}: already in {results_file}, not run again")
                done[key] = summarize(name, seed, Path(done[key]["run_dir"]), args.steps, done[key]["wall_s"])
                continue
            if args.table_only:
                continue
            shutil.rmtree(args.out / "matrix" / f"{name}-seed{seed}", ignore_errors=True)  # a half-finished attempt
            try:
                done[key] = train(name, seed, args, args.out)
            except Exception as exc:  # noqa: BLE001 - one failed run (e.g. a lost server) does not stop the matrix
                failed[f"{name} seed {seed}"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(f"{name} seed {seed}: FAILED: {failed[f'{name} seed {seed}']}", flush=True)
                continue
            r = done[key]
            print(f"{name} seed {seed}: eval {r['eval_start']:.3f} -> {r['eval_end']:.3f}, train reward "
                  f"{r['train_first']:.3f} -> {r['train_last']:.3f}, {r['wall_s']:.0f} s", flush=True)
            results_file.write_text(json.dumps(list(done.values()), indent=1))  # after each run: a crash keeps the rest
    results = {name: [done[name, seed] for seed in seeds if (name, seed) in done and done[name, seed]["steps"] == args.steps]
               for name in names}
    results = {name: rows for name, rows in results.items() if rows}
    notes = "".join(f"\n{run} failed: {why}\n" for run, why in failed.items())
    (args.out / "matrix.md").write_text(table(results) + notes)
    plot(results, args.out / "matrix.png")
    print("\n" + table(results) + notes + f"\nwrote {args.out / 'matrix.md'} and {args.out / 'matrix.png'}; the runs: {results_file}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
