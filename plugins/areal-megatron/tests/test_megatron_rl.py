"""``areal train`` with ``actor.name=megatron``: a short GRPO run on the tiny Qwen2 model with a real
embedded inference server. After every weight sync the trainer compares the checksum of its
full weights (``named_full_weights``: gathered, HF names) with the server's
(``trainer.verify_weight_sync``) and fails the run on any difference; the run must also train.

One trainer rank runs inside the test process (the CPU shim is installed by conftest.py); the
allocations ``actor=megatron:t2`` (tiny Qwen2) and ``actor=megatron:d2e2`` (tiny Qwen3-MoE, its 4
experts split over 2 expert-parallel ranks) run two trainer rank processes, which get the shim
through ``shim_site/sitecustomize.py`` on PYTHONPATH."""

import json
import os
from pathlib import Path

import pytest
import torch

import _megatron_reward

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_grpo")
pytestmark = pytest.mark.timeout(900)
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from _megatron_models import make_model

    root = tmp_path_factory.mktemp("rl")
    model = make_model(root / "model", "qwen2_tied")
    with open(root / "train.jsonl", "w") as f:
        for i, letter in enumerate("abcdefghijklmnop"):
            f.write(json.dumps({"id": f"t{i}", "prompt": f"Write a word with the letter {letter}.", "answer": letter}) + "\n")
    return root, model


@pytest.fixture(scope="module")
def moe_model(workspace):
    from _megatron_models import make_model

    return make_model(workspace[0] / "moe", "qwen3_moe")


def train(root: Path, model: Path, trial: str, overrides: list[str]) -> Path:
    from areal_core.config.loader import load_config
    from areal_core.registry import build_registry, set_registry
    from areal_core.trainer.entry import run_training

    cfg = {
        "experiment_name": "megatron", "trial_name": trial, "fileroot": str(root / "runs"), "seed": 3,
        "model_path": str(model),
        "actor": {"name": "megatron", "max_tokens_per_mb": 4096, "optimizer": {"lr": 1e-3}},
        "algorithm": {"name": "grpo"},
        "inference": {"name": "embedded", "n_servers": 1, "threads": 1, "max_batch": 16},
        "workflow": {"name": "rlvr", "n_samples": 2, "max_new_tokens": 16, "temperature": 1.0},
        "reward": {"name": "has_letter"},
        "rollout": {"batch_size": 2, "max_head_offpolicyness": 1},
        "train_dataset": {"path": str(root / "train.jsonl")},
        "trainer": {"total_steps": 2, "verify_weight_sync": True},
    }
    import yaml

    path = root / f"{trial}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    registry = build_registry(extra_plugins=[(_megatron_reward, "megatron-test")])
    set_registry(registry)
    try:
        return run_training(load_config(config_path=path, overrides=overrides, registry=registry), registry=registry)
    finally:
        set_registry(None)


def check_trained_and_verified(run_dir: Path) -> None:
    from areal_core.metrics import read_metrics

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["timing/verify_s"] > 0 and m["inference/version"] == m["step"] for m in metrics), metrics
    assert all(m["actor/grad_norm"] > 0 for m in metrics if "actor/grad_norm" in m)


@pytest.mark.parametrize("sync", ["distributed", "disk"])
def test_one_rank_run_syncs_weights_the_server_verifies(workspace, sync):
    root, model = workspace
    check_trained_and_verified(train(root, model, f"one_{sync}", [f"weight_sync.type={sync}"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU check runs the t2 allocation without the shim")
@pytest.mark.parametrize("part", ["t2", "d2e2"])
def test_two_ranks_sync_weights_the_server_verifies(workspace, moe_model, monkeypatch, part):
    root, model = workspace
    if "e" in part:
        model = moe_model
    site = root / "site" / "areal_megatron_test-0.1.0.dist-info"  # the reward, discoverable by rank processes
    site.mkdir(parents=True, exist_ok=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: areal-megatron-test\nVersion: 0.1.0\n")
    (site / "entry_points.txt").write_text("[areal]\nmegatron_test = _megatron_reward\n")
    paths = [str(HERE / "shim_site"), str(HERE), str(root / "site"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    check_trained_and_verified(train(root, model, part, ["weight_sync.type=distributed",
                                                         f"scheduler.allocation=embedded:d1+actor=megatron:{part}"]))
