"""``areal plot RUN_DIR``: a PNG of a run's reward and eval curves, from ``RUN_DIR/metrics.jsonl``.

    areal plot runs/quickstart/trial0                 # writes runs/quickstart/trial0/plot.png
    areal plot RUN_DIR -o curves.png --key train/actor/entropy

Panels: the training reward (``train/reward/mean`` with a ±std band from ``train/reward/std``)
and the held-out eval reward (``eval/reward_mean``) against the step; one more panel per
``--key``. Needs matplotlib (``pip install 'areal-core[plot]'``); rendered off-screen (Agg).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from areal_core.errors import ArealError
from areal_core.metrics import METRICS_FILE, read_metrics

TRAIN_REWARD, TRAIN_REWARD_STD, EVAL_REWARD = "train/reward/mean", "train/reward/std", "eval/reward_mean"


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that have a number for ``key``."""
    pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


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

    panels = [("reward", [TRAIN_REWARD, EVAL_REWARD])] + [(k, [k]) for k in extra_keys]
    if not any(series(rows, k)[0] for _, keys in panels for k in keys):
        raise ArealError(f"areal plot: {run_dir / METRICS_FILE} has no {TRAIN_REWARD} or {EVAL_REWARD} values yet")
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels):
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
        ax.legend(loc="best")
    fig.suptitle(str(run_dir), fontsize=9)
    fig.tight_layout()
    out = Path(output) if output else run_dir / "plot.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="areal plot", description="Plot a run's reward and eval curves to a PNG.")
    parser.add_argument("run_dir", type=Path, help="the run directory (fileroot/experiment_name/trial_name)")
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default: RUN_DIR/plot.png)")
    parser.add_argument("--key", action="append", default=[], help="another metric to plot in its own panel (repeatable)")
    args = parser.parse_args(argv)
    print(f"wrote {plot_run(args.run_dir, args.output, args.key)}")
    return 0
