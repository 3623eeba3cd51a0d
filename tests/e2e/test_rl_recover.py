"""Kill ``areal train`` with SIGKILL mid-run, then ``recover=auto``: the run resumes at the step after
its last checkpoint, with the data position of that checkpoint, and at the end no sample was lost
or trained twice. The inference servers of the killed run die with it (no orphans)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
from areal_core.metrics import read_metrics
from areal_core.trainer import checkpoint as ckpt
from coretest_support import subprocess_env
from rl_e2e_support import areal_train, audit_rows, check_no_sample_lost_or_repeated, fake_plugin_site

E2E_DIR = Path(__file__).resolve().parent
TOTAL_STEPS = 10


def server_pids(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["pid"] for r in rows if r.get("event") == "started process"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: its parent (the killed driver) is gone, init reaps it
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_run_recovers_without_losing_or_repeating_samples(tmp_path):
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    support.write_dataset(tmp_path / "train.jsonl", 32, seed=0, prefix="t")
    support.write_dataset(tmp_path / "valid.jsonl", 4, seed=1, prefix="v")
    cfg = support.run_config(tmp_path, model, "killed")
    cfg["trainer"].update(total_steps=TOTAL_STEPS, verify_weight_sync=False)
    config = support.write_config(tmp_path / "run.yaml", cfg)
    env = subprocess_env(fake_plugin_site(tmp_path), E2E_DIR, OMP_NUM_THREADS="1")
    run_dir = tmp_path / "runs" / "e2e" / "killed"

    first = areal_train(config, env)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step2" / ckpt.STATE_FILE).is_file():
        assert first.poll() is None, f"the run ended before step 2:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint after step 2 within 240 s"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = int(ckpt.latest_checkpoint(run_dir).name.removeprefix("step"))
    assert 2 <= killed_at < TOTAL_STEPS, "killed too late to test anything"
    time.sleep(2)
    assert not [p for p in server_pids(run_dir) if pid_alive(p)], "inference servers outlived the killed trainer"

    second = areal_train(config, env, "recover=auto")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out

    log_rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    resumed = [r for r in log_rows if r.get("event") == "recovering"]
    assert len(resumed) == 1 and resumed[0]["step"] == killed_at
    rows = audit_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, TOTAL_STEPS + 1))
    assert [m["step"] for m in read_metrics(run_dir) if "train/reward/mean" in m] == list(range(1, TOTAL_STEPS + 1))
    check_no_sample_lost_or_repeated(run_dir, tmp_path / "train.jsonl", seed=3)
    for r in rows:
        assert r["version_trained_on"] - r["token_version_min"] <= 1
