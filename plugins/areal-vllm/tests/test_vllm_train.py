"""``areal train`` on the quickstart recipe (examples/quickstart.yaml) with ``inference.name=vllm``:
full-weight disk sync, and LoRA with adapter-only sync, on the 0.2m model for a few steps.

Whether the recipe learns with vLLM is measured with full runs (docs/inference-backends.md);
here: the run completes, every step's weights reach the server (versions), and an adapter sync
moves a small fraction of the bytes of a full one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

for module in ("areal_fsdp", "areal_grpo", "areal_arith"):
    pytest.importorskip(module)

from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry
from test_vllm_contract import VLLM_TEST_CONFIG

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from areal_arith.cli import prepare

    return prepare(tmp_path_factory.mktemp("data"), size="0.2m", n_train=64, n_valid=8, n_sft=8)


def train(tmp_path: Path, data: Path, lora: bool) -> list[dict]:
    recipe = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    recipe["inference"] = {"name": "vllm", "n_servers": 1, **VLLM_TEST_CONFIG, "enable_lora": lora}
    if lora:
        recipe["actor"]["lora"] = {"enabled": True, "r": 8, "alpha": 16}
        recipe["weight_sync"] = {"type": "adapter"}
    tmp_path.mkdir(parents=True)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(recipe))
    registry = build_registry()
    set_registry(registry)
    try:
        from areal_core.trainer.entry import run_training

        config = load_config(config_path=config_path, env_prefix=None, registry=registry, overrides=[
            f"fileroot={tmp_path / 'runs'}", "experiment_name=qs_vllm", f"model_path={data / 'model'}",
            f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}",
            "trainer.total_steps=3", "trainer.eval_every=3", "rollout.batch_size=2", "workflow.n_samples=4"])
        return read_metrics(run_training(config, registry=registry))
    finally:
        set_registry(None)


def test_quickstart_trains_with_vllm_full_and_adapter_sync(tmp_path, data):
    full = train(tmp_path / "full", data, lora=False)
    adapter = train(tmp_path / "adapter", data, lora=True)
    for metrics in (full, adapter):
        assert [m["step"] for m in metrics if "train/reward/mean" in m] == [1, 2, 3]
        assert all(m["rollout/version_lag_max"] <= 1 for m in metrics if "rollout/version_lag_max" in m)
        assert [m["eval/n"] for m in metrics if "eval/reward_mean" in m] == [8, 8]  # steps 0 and 3
    full_bytes = [m["weight_sync/bytes"] for m in full if "weight_sync/bytes" in m]
    adapter_bytes = [m["weight_sync/bytes"] for m in adapter if "weight_sync/bytes" in m]
    assert full_bytes and adapter_bytes and min(full_bytes) > 0
    assert max(adapter_bytes) < min(full_bytes)
