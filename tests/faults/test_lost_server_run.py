"""``areal train`` with two inference servers, one killed by SIGKILL after the first step (and, in the last
test, right after it took new weights and before the weight check): the run
goes on to the last step, naming the lost server with its pid and signal in the log, and trains no
sample twice; with ``rollout.on_server_lost=restart`` (the default) the local scheduler starts the
server again at the current weights, with ``continue`` the run finishes on the other server.
Slow (whole runs)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")
psutil = pytest.importorskip("psutil")

import rl_e2e_support as support
from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry
from areal_core.trainer.entry import run_training

pytestmark = pytest.mark.slow


def kill_one_server_after_first_step(run_dir, stop: threading.Event) -> list[int]:
    """Wait for the first row of metrics.jsonl, then SIGKILL one of this process's servers."""
    killed: list[int] = []

    def watch():
        while not stop.is_set():
            metrics = run_dir / "metrics.jsonl"
            if metrics.is_file() and '"step": 1' in metrics.read_text():
                servers = [p for p in psutil.Process().children(recursive=True)
                           if "areal_embedded.server" in " ".join(p.cmdline())]
                if len(servers) == 2:
                    victim = max(servers, key=lambda p: p.pid)
                    victim.kill()
                    killed.append(victim.pid)
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def two_server_config(tmp_path, policy: str):
    """A 4-step run with two embedded servers, weight checks on, ``rollout.on_server_lost=policy``."""
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    support.write_dataset(tmp_path / "train.jsonl", 16, seed=0, prefix="t")
    support.write_dataset(tmp_path / "valid.jsonl", 4, seed=1, prefix="v")
    cfg = support.run_config(tmp_path, model, "lost",
                             inference={"name": "embedded", "n_servers": 2, "threads": 1, "max_batch": 16})
    cfg["trainer"] = {"total_steps": 4, "checkpoint_every": 0, "verify_weight_sync": True}
    cfg["rollout"] = {**cfg["rollout"], "control_timeout_s": 5.0, "on_server_lost": policy}
    return support.write_config(tmp_path / "lost.yaml", cfg)


@pytest.mark.parametrize("policy,words", [("restart", "inference server back"),
                                          ("continue", "inference server lost; continuing on the others")])
def test_a_run_survives_losing_one_of_two_servers(tmp_path, policy, words):
    path = two_server_config(tmp_path, policy)
    registry = build_registry(extra_plugins=[(support, "e2e-test")])
    set_registry(registry)
    stop = threading.Event()
    run_dir = tmp_path / "runs" / "e2e" / "lost"
    killed = kill_one_server_after_first_step(run_dir, stop)
    try:
        run_training(load_config(config_path=path, registry=registry), registry=registry)
    finally:
        stop.set()
        set_registry(None)
    assert len(killed) == 1
    assert [row["step"] for row in read_metrics(run_dir) if "train/actor/grad_norm" in row] == [1, 2, 3, 4]
    log = (run_dir / "log.jsonl").read_text()
    assert words in log
    assert f"(pid {killed[0]}) was killed by SIGKILL" in log
    trained = [sid for row in support.audit_rows(run_dir) for sid in row["sample_ids"]]
    assert len(trained) == len(set(trained))


def test_a_server_killed_between_the_push_and_the_check_is_left_to_the_lost_server_handling(tmp_path, monkeypatch):
    """The server dies after it took the new weights and before the checksum request: the check
    logs it unverified (it is no wrong sync), and the next weight sync restarts it."""
    from areal_core.trainer.rl import RLTrainer

    path = two_server_config(tmp_path, "restart")
    registry = build_registry(extra_plugins=[(support, "e2e-test")])
    set_registry(registry)
    killed: list[int] = []
    verify = RLTrainer._verify_weights

    def kill_then_verify(self, version):
        if not killed:
            servers = [p for p in psutil.Process().children(recursive=True)
                       if "areal_embedded.server" in " ".join(p.cmdline())]
            victim = max(servers, key=lambda p: p.pid)
            victim.kill()
            victim.wait(10)
            killed.append(victim.pid)
        return verify(self, version)

    monkeypatch.setattr(RLTrainer, "_verify_weights", kill_then_verify)
    try:
        run_training(load_config(config_path=path, registry=registry), registry=registry)
    finally:
        set_registry(None)
    run_dir = tmp_path / "runs" / "e2e" / "lost"
    assert [row["step"] for row in read_metrics(run_dir) if "train/actor/grad_norm" in row] == [1, 2, 3, 4]
    log = (run_dir / "log.jsonl").read_text()
    assert "weights not verified: the server did not answer" in log
    assert "inference server back" in log
