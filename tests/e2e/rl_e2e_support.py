"""Helpers of the end-to-end RL tests: a verifiable reward registered as a temporary plugin, a tiny
arithmetic dataset, and a run config for the 0.2m tiny model (areal-fsdp, areal-grpo,
areal-embedded). Also the plugin module of the fake distribution that subprocess runs discover."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import yaml

from areal_core import hookimpl
from areal_core.config.schema import DatasetConfig
from areal_core.data.dataset import EpochDataLoader, load_rows
from areal_core.registry import Component
from areal_core.trainer import checkpoint as ckpt

REWARD_NAME = "e2e_has_letter"


def has_letter_reward(prompt: str, completion: str, sample: dict) -> float:
    """1.0 when the completion contains the requested letter, else 0.0. The untrained tiny model
    writes random bytes, so about half its 16-token completions score 1: rewards vary in a group."""
    return 1.0 if sample["answer"] in completion else 0.0


def make_reward(config):
    return has_letter_reward


@hookimpl
def areal_register_rewards():
    return [Component(REWARD_NAME, "rl_e2e_support:make_reward", None, "the requested letter appears in the completion")]


def write_dataset(path: Path, n: int, seed: int, prefix: str) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
            f.write(json.dumps({"id": f"{prefix}{i}", "prompt": f"Write a word with the letter {letter}.",
                                "answer": letter}) + "\n")
    return path


def make_workspace(root: Path, arch: str = "qwen2") -> tuple[Path, Path]:
    """``root`` with the 0.2m tiny ``arch`` model and the train (16) / valid (4) letter datasets."""
    from areal_core.testing.tiny import make_tiny_model

    model = make_tiny_model(root / "model", size="0.2m", arch=arch)
    write_dataset(root / "train.jsonl", 16, seed=0, prefix="t")
    write_dataset(root / "valid.jsonl", 4, seed=1, prefix="v")
    return root, model


def run_config(root: Path, model: Path, trial: str, **sections) -> dict:
    """A few-step run on the tiny model; ``sections`` replace top-level keys."""
    cfg = {
        "experiment_name": "e2e", "trial_name": trial, "fileroot": str(root / "runs"), "seed": 3,
        "model_path": str(model),
        "actor": {"name": "fsdp", "max_tokens_per_mb": 4096, "optimizer": {"lr": 1e-3}},
        "algorithm": {"name": "grpo"},
        "inference": {"name": "embedded", "n_servers": 1, "threads": 1, "max_batch": 16},
        "workflow": {"name": "rlvr", "n_samples": 2, "max_new_tokens": 16, "temperature": 1.0},
        "reward": {"name": REWARD_NAME},
        "scheduler": {"name": "local"},
        "rollout": {"batch_size": 2, "max_head_offpolicyness": 1, "max_concurrent_rollouts": 8},
        "train_dataset": {"path": str(root / "train.jsonl")},
        "valid_dataset": {"path": str(root / "valid.jsonl")},
        "trainer": {"total_steps": 3, "checkpoint_every": 1, "verify_weight_sync": True},
    }
    cfg.update(sections)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def audit_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "trained_samples.jsonl").read_text().splitlines()]


def check_no_sample_lost_or_repeated(run_dir: Path, train_path: Path, seed: int) -> None:
    """Trained ∪ in flight (last checkpoint) == the first `index` samples of epoch 0's order, disjoint."""
    trained = [sid for row in audit_rows(run_dir) for sid in row["sample_ids"]]
    assert len(trained) == len(set(trained)), f"a sample was trained twice: {trained}"
    state = json.loads((ckpt.latest_checkpoint(run_dir) / ckpt.STATE_FILE).read_text())
    position = state["controller"]["data_position"]
    assert position["epoch"] == 0, "the test dataset is sized so that one epoch is enough"
    in_flight = [e["sample_id"] for e in state["controller"]["in_flight"]]
    assert not set(in_flight) & set(trained)
    loader = EpochDataLoader(load_rows(DatasetConfig(path=str(train_path))), seed=seed)
    taken = [loader.rows[i]["sample_id"] for i in loader.order(0)[: position["index"]]]
    assert sorted(trained + in_flight) == sorted(taken)


def fake_plugin_site(tmp_path: Path) -> Path:
    """An installed-looking distribution whose entry point is the test reward plugin."""
    site = tmp_path / "site"
    info = site / "areal_e2e_reward-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: areal-e2e-reward\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[areal]\ne2e_reward = rl_e2e_support\n")
    return site


def areal_train(config: Path, env: dict, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "areal_core.cli", "train", "--config", str(config), *overrides],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
