"""``areal train`` on Qwen3 and Qwen3-MoE: real embedded servers, the fsdp engine, grpo.

Each run syncs weights every step (disk or broadcast) with ``trainer.verify_weight_sync`` on,
which compares the servers' checksum of their weights with the trainer's after every sync and
fails the run otherwise. Qwen3-MoE holds its experts fused in memory on both sides; the sync
carries them per expert (the saved files' names) and the server fuses them back, so an equal
checksum proves the mapping exact. One run names its model by a Hugging Face hub id, resolved
from a local cache (offline).
"""

from __future__ import annotations

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry
from areal_core.testing.tiny import cache_as_hub_model
from areal_core.trainer.entry import run_training


@pytest.fixture
def registry():
    registry = build_registry(extra_plugins=[(support, "e2e-test")])
    set_registry(registry)
    yield registry
    set_registry(None)


@pytest.mark.parametrize("arch,sync,by_hub_id", [("qwen3_moe", "disk", True), ("qwen3_moe", "distributed", False),
                                                 ("qwen3", "distributed", False)])
def test_weight_sync_leaves_servers_with_the_trainers_weights(tmp_path, monkeypatch, registry, arch, sync, by_hub_id):
    root, model = support.make_workspace(tmp_path, arch=arch)
    model_path = str(model)
    if by_hub_id:
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # inherited by the server processes
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        cache_as_hub_model(model, tmp_path / "hf_cache", "tiny-org/tiny-moe")
        model_path = "tiny-org/tiny-moe"
    cfg = support.run_config(root, model, arch, model_path=model_path)
    path = support.write_config(root / "run.yaml", cfg)
    overrides = [f"weight_sync.type={sync}", "trainer.total_steps=2", "valid_dataset=null", "trainer.checkpoint_every=0"]
    run_dir = run_training(load_config(config_path=path, overrides=overrides, registry=registry), registry=registry)
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["timing/verify_s"] > 0 and m["inference/version"] == m["step"] for m in metrics)
    assert any(m["train/actor/grad_norm"] > 0 for m in metrics)  # a sync carried changed weights
