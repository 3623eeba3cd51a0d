"""End-to-end RL runs on the 0.2m tiny model: real embedded servers, the fsdp engine, grpo.

Invariants checked from what a run writes (trained_samples.jsonl, metrics.jsonl, the last
checkpoint's trainer state):

* no sample is trained twice, and every sample taken from the dataloader is either trained or
  still in flight in the last checkpoint (nothing lost; the data order is the seeded one);
* every trained token's version lag is ≤ η (η = 1 async, η = 0 synchronous: lag exactly 0);
* after each weight sync the servers' weights equal the trainer's (``trainer.verify_weight_sync``
  compares checksums after every sync and fails the run otherwise; disk and distributed paths).

Also on Qwen3 and Qwen3-MoE (``test_weight_sync_leaves_servers_with_the_trainers_weights``): MoE
holds its experts fused in memory on both sides; a sync carries them per expert (the saved files'
names) and the server fuses them back, so an equal checksum proves the mapping exact. One of
those runs names its model by a Hugging Face hub id, resolved from a local cache (offline).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
from areal_core.config.loader import load_config
from areal_core.config.yamlio import read_yaml_file
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry
from areal_core.testing.tiny import cache_as_hub_model
from areal_core.trainer.entry import run_training
from rl_e2e_support import audit_rows, check_no_sample_lost_or_repeated


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return support.make_workspace(tmp_path_factory.mktemp("rl"))


@pytest.fixture
def registry():
    registry = build_registry(extra_plugins=[(support, "e2e-test")])
    set_registry(registry)
    yield registry
    set_registry(None)


def train(workspace, registry, trial: str, overrides: list[str]) -> Path:
    root, model = workspace
    path = support.write_config(root / f"{trial}.yaml", support.run_config(root, model, trial))
    return run_training(load_config(config_path=path, overrides=overrides, registry=registry), registry=registry)


def test_async_run_keeps_every_invariant(workspace, registry):
    run_dir = train(workspace, registry, "eta1", ["rollout.max_head_offpolicyness=1", "rollout.enforce_token_lag=true",
                                                  "trainer.total_steps=4"])
    rows = audit_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # the batch of step s trains weights at version s-1; every token lags at most η = 1
        assert r["version_trained_on"] - r["token_version_min"] <= 1
        assert r["token_version_max"] <= r["version_trained_on"]
    check_no_sample_lost_or_repeated(run_dir, workspace[0] / "train.jsonl", seed=3)

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert "eval/reward_mean" in metrics[0] and "eval/reward_mean" in metrics[-1]
    for m in metrics[1:]:
        assert m["rollout/version_lag_max"] <= 1
        assert m["timing/verify_s"] > 0  # checksums compared after this step's sync (else the run fails)
        for key in ("train/reward/mean", "train/advantage/mean", "train/actor/clip_fraction", "train/actor/entropy",
                    "train/actor/grad_norm", "train/behav_weight/mean", "timing/gen_wait_s", "timing/train_s",
                    "timing/weight_sync_s", "timing/pause_s", "throughput/trained_tokens_per_s"):
            assert key in m, key
    assert metrics[-1]["version"] == 4
    saved, _ = read_yaml_file(run_dir / "config.yaml")
    assert saved["actor"]["temperature"] == saved["workflow"]["temperature"] == 1.0
    assert (run_dir / "export" / "step4" / "config.json").is_file()


def test_admission_alone_bounds_the_lag_of_each_groups_newest_token(workspace, registry):
    run_dir = train(workspace, registry, "eta1_admission", ["rollout.max_head_offpolicyness=1", "trainer.total_steps=3",
                                                            "valid_dataset=null", "trainer.verify_weight_sync=false"])
    for r in audit_rows(run_dir):
        assert r["version_trained_on"] - r["group_finished_version_min"] <= 1
    check_no_sample_lost_or_repeated(run_dir, workspace[0] / "train.jsonl", seed=3)


def test_synchronous_run_trains_only_current_tokens(workspace, registry):
    run_dir = train(workspace, registry, "eta0", ["rollout.max_head_offpolicyness=0", "trainer.total_steps=3"])
    for r in audit_rows(run_dir):
        assert r["token_version_min"] == r["token_version_max"] == r["version_trained_on"]
    check_no_sample_lost_or_repeated(run_dir, workspace[0] / "train.jsonl", seed=3)
    assert all(m["rollout/version_lag_max"] == 0 for m in read_metrics(run_dir)[1:])


def test_distributed_weight_sync_matches_the_trainer(workspace, registry):
    run_dir = train(workspace, registry, "broadcast", ["weight_sync.type=distributed", "trainer.total_steps=2",
                                                       "valid_dataset=null", "trainer.checkpoint_every=0"])
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["timing/verify_s"] > 0 and m["inference/version"] == m["step"] for m in metrics)


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


def test_an_unset_lr_schedule_length_spans_every_optimizer_step_of_the_run(workspace, registry):
    """PPO with a critic: 2 steps × 2 epochs × 2 minibatches = 8 optimizer steps per engine, so with
    ``optimizer.total_steps`` unset the linear decay (no warmup, to 0) uses lr·(1 - s/8) at optimizer step s
    for actor and critic alike (it once spanned trainer.total_steps and reached 0 after 2)."""
    optimizer = "{lr: 1.0e-3, lr_scheduler: linear, min_lr_ratio: 0.0}"
    run_dir = train(workspace, registry, "lr_span", [
        "algorithm.name=ppo", "algorithm.n_minibatches=2", "algorithm.ppo_epochs=2", f"actor.optimizer={optimizer}",
        f"critic={{name: fsdp, critic: true, max_tokens_per_mb: 4096, optimizer: {optimizer}}}",
        "trainer.total_steps=2", "valid_dataset=null", "trainer.checkpoint_every=0", "trainer.verify_weight_sync=false"])
    metrics = read_metrics(run_dir)
    for m, last_step in zip(metrics, (3, 7)):  # the lr of each train step's last optimizer step
        assert m["train/actor/lr"] == pytest.approx(1e-3 * (1 - last_step / 8))
        assert m["train/critic/lr"] == pytest.approx(1e-3 * (1 - last_step / 8))
