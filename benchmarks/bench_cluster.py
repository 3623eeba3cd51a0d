"""The quickstart recipe on one machine (local scheduler) against two Ray nodes (ray scheduler).

    python benchmarks/bench_cluster.py                    # 0.2m model, 10 steps, 2 trainer ranks
    python benchmarks/bench_cluster.py --steps 20 --size 3m

Both are full ``areal train`` runs of examples/quickstart.yaml (areal-arith task, one embedded
server, two fsdp trainer ranks, disk weight sync) on the same data and seed, from the untrained
model (no SFT stage). ``local``: subprocesses of the driver. ``ray``: a real two-node Ray cluster
on this machine (``ray start --head`` + a worker joined with ``ray start --address``,
areal_ray.testing.RayCluster), the server pinned to the head (custom resource ``node_a``), the
ranks to the worker (``node_b``). The cluster's own start is not counted.

Printed per scheduler: the wall time of ``areal train`` (process start to exit: server start,
rank start, the training loop, shutdown) and of the training loop alone (the sum of
``timing/step_s``), and the ratio ray / local. Both "nodes" share this machine's cores, so the
difference is the scheduler's overhead (placement, actors, the shared-run-dir check), not network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def areal_train(root: Path, data: Path, name: str, steps: int, extra: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds of `areal train`, seconds of the training loop)."""
    from areal_core.metrics import read_metrics

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "areal_core.cli", "train", "--config", str(ROOT / "examples/quickstart.yaml"),
                    f"fileroot={root / 'runs'}", f"trial_name={name}", f"model_path={data / 'model'}",
                    f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}",
                    f"trainer.total_steps={steps}", "trainer.eval_every=0", "trainer.checkpoint_every=0",
                    "scheduler.trainer_ranks=2", *extra], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    loop = sum(m["timing/step_s"] for m in read_metrics(root / "runs" / "quickstart" / name) if "timing/step_s" in m)
    return wall, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", default="0.2m", help="areal-arith model size (0.2m, 3m)")
    args = parser.parse_args()

    from areal_arith.cli import prepare
    from areal_ray.testing import RayCluster, ray_env

    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        data = prepare(root / "data", size=args.size, n_train=512, n_valid=8, n_sft=8)
        env = {**ray_env(), "OMP_NUM_THREADS": "1"}
        results = {"local": areal_train(root, data, "local", args.steps, [], env)}
        cluster = RayCluster.start(root / "ray")
        try:
            results["ray"] = areal_train(root, data, "ray", args.steps, [
                "scheduler.name=ray", f"scheduler.address={cluster.address}",
                "scheduler.server_resources={node_a: 1}", "scheduler.trainer_resources={node_b: 1}"], env)
        finally:
            cluster.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"quickstart, {args.size} model, {args.steps} steps, 1 server + 2 trainer ranks, {os.cpu_count()} cores")
    print(f"{'scheduler':<10} {'areal train wall s':>19} {'training loop s':>16}")
    for name, (wall, loop) in results.items():
        print(f"{name:<10} {wall:>19.1f} {loop:>16.1f}")
    (lw, ll), (rw, rl) = results["local"], results["ray"]
    print(f"{'ray/local':<10} {rw / lw:>19.2f} {rl / ll:>16.2f}")


if __name__ == "__main__":
    main()
