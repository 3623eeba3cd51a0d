"""The trainer's torch thread count beside a pinned inference server: ``trainer.torch_threads``.

    python benchmarks/bench_trainer_threads.py                    # unpinned, all, auto: 6 steps, 2 rounds
    python benchmarks/bench_trainer_threads.py --threads 1,2,auto --steps 8 --rounds 3

Every run is the quickstart's RL stage (examples/quickstart.yaml: grpo, 16 prompts × 8 samples,
≤ 8 new tokens, two minibatches, η = 1, disk weight sync every step) on the untrained model and
data of ``areal-arith prepare``, with the one embedded server pinned to the first core
(``inference.cpus``, 1 thread) and the trainer (this process) free to run on every core. Only
``trainer.torch_threads`` differs between runs: a number, or ``auto`` (unset: the cores not pinned
to the server, see areal_core/trainer/threads.py). torch's own default, what the trainer used
before that setting, is one thread per core: ``--threads`` ``all`` stands for it. ``unpinned`` is
the layout without pinning (``inference.cpus=null``, what the quickstart shipped before it pinned): the
server not pinned and the trainer at torch's default.

The runs alternate round by round in this one invocation (so a busy machine slows all of them
alike). Printed per setting: the median over runs of the mean ``timing/train_s`` and
``timing/step_s`` of the steps after the first (the first step includes warm-up), samples/s of
the loop, and each setting's step time as a ratio to the first setting's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(root: Path, data: Path, threads: str, args, trial: str) -> dict[str, float]:
    from areal_core.config.loader import load_config
    from areal_core.metrics import read_metrics
    from areal_core.trainer.entry import run_training

    pin = "null" if threads == "unpinned" else f"[{min(os.sched_getaffinity(0))}]"
    value = {"auto": "null", "unpinned": "null", "all": str(len(os.sched_getaffinity(0)))}.get(threads, threads)
    overrides = [f"fileroot={root}", "experiment_name=bench_threads", f"trial_name={trial}",
                 f"model_path={data / 'model'}", f"train_dataset.path={data / 'train.jsonl'}", "valid_dataset=null",
                 f"inference.cpus={pin}", f"trainer.torch_threads={value}",
                 f"trainer.total_steps={args.steps}", "trainer.checkpoint_every=0", "logging.level=warning"]
    cfg = load_config(config_path=REPO / "examples" / "quickstart.yaml", overrides=overrides, env_prefix=None)
    rows = [r for r in read_metrics(run_training(cfg)) if "timing/step_s" in r][1:]
    return {"train_s": statistics.mean(r["timing/train_s"] for r in rows),
            "step_s": statistics.mean(r["timing/step_s"] for r in rows),
            "samples_per_s": sum(r["train/n_seqs"] for r in rows) / sum(r["timing/step_s"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="unpinned,all,auto",
                    help="comma list of trainer.torch_threads values: N, all (one per core: torch's default), auto "
                         "(unset), or unpinned (no inference.cpus, torch's default threads)")
    ap.add_argument("--steps", type=int, default=6, help="RL steps per run (the first is not counted)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
    args = ap.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench_trainer_threads: needs at least 2 cores (one is pinned to the server)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = args.threads.split(",")

    from areal_arith.cli import prepare

    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        data = prepare(Path(tmp) / "data", n_sft=10)
        results: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
        for r in range(args.rounds):
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for s in order:
                result = run_once(Path(tmp) / "runs", data, s, args, trial=f"t{s}_r{r}")
                results[s].append(result)
                print(f"round {r} threads={s}: train_s {result['train_s']:.2f}, step_s {result['step_s']:.2f}",
                      flush=True)
    med = {s: {k: statistics.median(x[k] for x in results[s]) for k in ("train_s", "step_s", "samples_per_s")}
           for s in settings}
    base = settings[0]
    print(f"\n{'torch_threads':14}{'train_s':>9}{'step_s':>9}{'samples/s':>11}  step_s / {base}'s")
    for s in settings:
        m = med[s]
        print(f"{s:14}{m['train_s']:9.2f}{m['step_s']:9.2f}{m['samples_per_s']:11.2f}  "
              f"{m['step_s'] / med[base]['step_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
