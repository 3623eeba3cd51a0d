"""`areal train` of the quickstart recipe (examples/quickstart.yaml, fewer steps, the untrained 0.2m
model) across the two nodes of the real Ray cluster: the server on the head (``node_a``), two
trainer ranks on the worker (``node_b``). Mid-run the worker's raylet is killed: the run stops with
an error naming the lost rank and node; ``recover=auto`` without the worker is refused before any
process starts (too few CPUs); with the worker back it finishes the run, and no sample was lost or
trained twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

for module in ("areal_embedded", "areal_fsdp", "areal_grpo", "areal_arith"):
    pytest.importorskip(module)

from areal_core.trainer import checkpoint as ckpt
from areal_ray.testing import ray_env

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[3]
TOTAL_STEPS = 8
SEED = 1  # examples/quickstart.yaml


def areal_train(config: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "areal_core.cli", "train", "--config", str(config), *overrides],
                            env={**ray_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def quickstart_overrides(tmp_path: Path, data: Path, address: str) -> list[str]:
    return [f"fileroot={tmp_path / 'runs'}", "trial_name=ray", f"model_path={data / 'model'}",
            f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}",
            f"trainer.total_steps={TOTAL_STEPS}", "trainer.checkpoint_every=1", "trainer.eval_every=0",
            "rollout.batch_size=2", "workflow.n_samples=4", "inference.max_batch=16",
            "scheduler.name=ray", f"scheduler.address={address}", "scheduler.trainer_ranks=2",
            "scheduler.server_resources={node_a: 1}", "scheduler.trainer_resources={node_b: 1}"]


def test_quickstart_across_two_nodes_survives_a_lost_node(ray_cluster, tmp_path):
    from areal_arith.cli import prepare

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from rl_e2e_support import audit_rows, check_no_sample_lost_or_repeated

    data = prepare(tmp_path / "data", size="0.2m", n_train=64, n_valid=8, n_sft=8)
    overrides = quickstart_overrides(tmp_path, data, ray_cluster.address)
    run_dir = tmp_path / "runs" / "quickstart" / "ray"
    config = ROOT / "examples" / "quickstart.yaml"

    first = areal_train(config, *overrides)
    deadline = time.monotonic() + 400
    while not (run_dir / "checkpoints" / "step2" / ckpt.STATE_FILE).is_file():
        assert first.poll() is None, f"the run ended before step 2:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint after step 2 within 400 s"
        time.sleep(0.05)
    worker = ray_cluster.nodes[-1]
    subprocess.run(["kill", "-9", str(worker.raylet_pid())], check=True)
    out, _ = first.communicate(timeout=300)
    assert first.returncode != 0
    assert "trainer-" in out and f"on Ray node {ray_cluster.ip}" in out and "is lost" in out, out[-3000:]
    assert "recover=auto" in out
    killed_at = int(ckpt.latest_checkpoint(run_dir).name.removeprefix("step"))
    assert 2 <= killed_at < TOTAL_STEPS, "killed too late to test anything"

    worker.stop()
    ray_cluster.nodes.remove(worker)
    ray_cluster.wait_nodes(1)  # the GCS has marked the worker dead
    without = areal_train(config, *overrides, "recover=auto")
    out, _ = without.communicate(timeout=120)
    assert without.returncode != 0 and "needs 3 CPUs" in out and "has 2" in out, out[-3000:]

    ray_cluster.start_worker()
    second = areal_train(config, *overrides, "recover=auto")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-5000:]
    rows = audit_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, TOTAL_STEPS + 1))
    check_no_sample_lost_or_repeated(run_dir, data / "train.jsonl", seed=SEED)
    logs = {p.name for p in (run_dir / "logs").iterdir()}
    assert {"server-0.log", "trainer-0.log", "trainer-1.log"} <= logs
    assert "recovering" in (run_dir / "logs" / "trainer-0.log").read_text()  # rank 0 resumed from a checkpoint
