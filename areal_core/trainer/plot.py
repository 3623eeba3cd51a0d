"""``areal plot RUN_DIR``: a PNG of a run's reward and eval curves, from ``RUN_DIR/metrics.jsonl``.

    areal plot runs/quickstart/trial0                 # writes runs/quickstart/trial0/plot.png
    areal plot RUN_DIR -o curves.png --key train/actor/entropy

Panels against the step, each drawn when the run logged its metrics:

* **reward**: the training reward (``train/reward/mean`` with a ±std band from
  ``train/reward/std``) and the held-out eval reward (``eval/reward_mean``);
* **time per step**: ``timing/step_s`` stacked into generation wait (``gen_wait_s``), train
  (``train_s``), weight sync (``export_weights_s`` + ``pause_s`` + ``weight_sync_s`` + ``verify_s``),
  eval (``eval_s``), export (``export_s``) and the rest;
* **version lag**: mean and max version lag of the trained tokens (``rollout/version_lag_*``);
* **throughput**: trained tokens per second of each step (``throughput/trained_tokens_per_s``);
* **overlap**: the share of each step the inference servers were busy (``inference/busy_fraction``)
  and the trainer trained (``timing/trainer_busy_fraction``);

then one panel per ``--key``. Needs matplotlib (``pip install 'areal-core[plot]'``); rendered
off-screen (Agg).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from areal_core.errors import ArealError
from areal_core.metrics import METRICS_FILE, read_metrics

TRAIN_REWARD, TRAIN_REWARD_STD, EVAL_REWARD = "train/reward/mean", "train/reward/std", "eval/reward_mean"
STEP_TIME = "timing/step_s"
# the stacked parts of timing/step_s: label -> the timing/ phases it sums ("other": the remainder)
TIME_PARTS = {"gen wait": ("gen_wait_s",), "train": ("train_s",),
              "weight sync": ("export_weights_s", "pause_s", "weight_sync_s", "verify_s"),
              "eval": ("eval_s",), "export": ("export_s",)}
LINE_PANELS = [("version lag", ["rollout/version_lag_mean", "rollout/version_lag_max"]),
               ("throughput (trained tokens/s)", ["throughput/trained_tokens_per_s"]),
               ("overlap (busy fraction of the step)", ["inference/busy_fraction", "timing/trainer_busy_fraction"])]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that have a number for ``key``."""
    pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def time_breakdown(rows: list[dict]) -> tuple[list[int], dict[str, list[float]]]:
    """(steps, {part: seconds per step}) for the rows with ``timing/step_s``: the parts of
    :data:`TIME_PARTS` and ``other`` (step time not in any part, ≥ 0)."""
    timed = [r for r in rows if isinstance(r.get(STEP_TIME), (int, float))]
    parts: dict[str, list[float]] = {}
    for label, phases in TIME_PARTS.items():
        values = [sum(float(r.get(f"timing/{p}", 0.0)) for p in phases) for r in timed]
        if any(values):
            parts[label] = values
    parts["other"] = [max(0.0, float(r[STEP_TIME]) - sum(v[i] for v in parts.values())) for i, r in enumerate(timed)]
    return [r["step"] for r in timed], parts


def plot_run(run_dir: str | Path, output: str | Path | None = None, extra_keys: Sequence[str] = ()) -> Path:
    """Write the plot of ``run_dir``'s metrics and return the PNG's path."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise ArealError(f"areal plot: {run_dir / METRICS_FILE} does not exist (is {str(run_dir)!r} a run directory?)")
    rows = read_metrics(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArealError("areal plot needs matplotlib: pip install 'areal-core[plot]'") from None

    if not any(series(rows, k)[0] for k in (TRAIN_REWARD, EVAL_REWARD, *extra_keys)):
        raise ArealError(f"areal plot: {run_dir / METRICS_FILE} has no {TRAIN_REWARD} or {EVAL_REWARD} values yet")
    time_steps, time_parts = time_breakdown(rows)
    panels = [("reward", [TRAIN_REWARD, EVAL_REWARD])]
    panels += [("time per step (s)", [])] if time_steps else []
    panels += [(title, keys) for title, keys in LINE_PANELS if any(series(rows, k)[0] for k in keys)]
    panels += [(k, [k]) for k in extra_keys]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels):
        if not keys:  # the time breakdown
            ax.stackplot(time_steps, *time_parts.values(), labels=list(time_parts), alpha=0.8)
        for key in keys:
            steps, values = series(rows, key)
            if not steps:
                continue
            style = {"marker": "o"} if key == EVAL_REWARD else {}
            ax.plot(steps, values, label=key, **style)
            if key == TRAIN_REWARD:
                std_steps, stds = series(rows, TRAIN_REWARD_STD)
                if std_steps == steps:
                    ax.fill_between(steps, [v - s for v, s in zip(values, stds)], [v + s for v, s in zip(values, stds)],
                                    alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the panel: it hides no data
    fig.suptitle(str(run_dir), fontsize=9)
    fig.tight_layout()
    out = Path(output) if output else run_dir / "plot.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="areal plot", description="Plot a run's reward and eval curves, time per "
                                                                    "step, version lag, throughput and overlap to a PNG.")
    parser.add_argument("run_dir", type=Path, help="the run directory (fileroot/experiment_name/trial_name)")
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default: RUN_DIR/plot.png)")
    parser.add_argument("--key", action="append", default=[], help="another metric to plot in its own panel (repeatable)")
    args = parser.parse_args(argv)
    print(f"wrote {plot_run(args.run_dir, args.output, args.key)}")
    return 0
