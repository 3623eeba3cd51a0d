"""Two trainer ranks (``scheduler.trainer_ranks=2``): rank processes started by the local scheduler,
the controller on rank 0, the batch broadcast to both; the servers' weights equal the trainer's
after every sync (``trainer.verify_weight_sync``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
from areal_core.metrics import read_metrics
from coretest_support import subprocess_env
from rl_e2e_support import areal_train, audit_rows, fake_plugin_site

E2E_DIR = Path(__file__).resolve().parent


def test_two_trainer_ranks(tmp_path):
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    support.write_dataset(tmp_path / "train.jsonl", 16, seed=0, prefix="t")
    support.write_dataset(tmp_path / "valid.jsonl", 4, seed=1, prefix="v")
    config = support.write_config(tmp_path / "run.yaml", support.run_config(tmp_path, model, "ranks2"))
    env = subprocess_env(fake_plugin_site(tmp_path), E2E_DIR, OMP_NUM_THREADS="1")

    proc = areal_train(config, env, "scheduler.trainer_ranks=2", "trainer.total_steps=2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    run_dir = tmp_path / "runs" / "e2e" / "ranks2"
    assert {p.name for p in (run_dir / "logs").iterdir()} == {"server0-0.log", "trainer-0.log", "trainer-1.log"}
    assert [r["step"] for r in audit_rows(run_dir)] == [1, 2]
    metrics = [m for m in read_metrics(run_dir) if m["step"] > 0]
    assert all(m["train/n_seqs"] == 4 and m["timing/verify_s"] > 0 for m in metrics)
