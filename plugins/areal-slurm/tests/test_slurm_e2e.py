"""`areal train` of the quickstart recipe (examples/quickstart.yaml, fewer steps, the untrained 0.2m
model) submitted through the real one-node Slurm cluster: one sbatch job, the server and two
trainer ranks as its srun steps, run to completion; the job is gone afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("areal_embedded", "areal_fsdp", "areal_grpo", "areal_arith"):
    pytest.importorskip(module)

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[3]
TOTAL_STEPS = 4


def test_quickstart_through_slurm(slurm_cluster, tmp_path):
    from areal_arith.cli import prepare
    from areal_core.metrics import read_metrics

    data = prepare(tmp_path / "data", size="0.2m", n_train=64, n_valid=8, n_sft=8)
    run = subprocess.run(
        [sys.executable, "-m", "areal_core.cli", "train", "--config", str(ROOT / "examples" / "quickstart.yaml"),
         f"fileroot={tmp_path / 'runs'}", "trial_name=slurm", f"model_path={data / 'model'}",
         f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}",
         f"trainer.total_steps={TOTAL_STEPS}", "trainer.eval_every=0", "rollout.batch_size=2",
         "workflow.n_samples=4", "inference.max_batch=16", "scheduler.name=slurm", "scheduler.partition=debug",
         "scheduler.allocation=embedded:d1+fsdp:d2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    run_dir = tmp_path / "runs" / "quickstart" / "slurm"
    assert [m["step"] for m in read_metrics(run_dir) if "train/reward/mean" in m] == list(range(1, TOTAL_STEPS + 1))
    script = (run_dir / "slurm" / "job.sh").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --ntasks=3" in script
    assert {"server-0.log", "trainer-0.log", "trainer-1.log"} <= {p.name for p in (run_dir / "logs").iterdir()}
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True, check=True).stdout == ""
