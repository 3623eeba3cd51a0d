"""The CPU quickstart's wiring (examples/quickstart*.yaml, areal-arith, areal sft -> areal train).

The configs validate as shipped; the whole pipeline (prepare -> SFT -> asynchronous GRPO -> plot)
runs a few steps on the 0.2m model with the quickstart's own configs and tiny overrides. Whether
the recipe *learns* is measured by running examples/quickstart.sh (docs/quickstart.md), not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

for module in ("areal_embedded", "areal_fsdp", "areal_grpo", "areal_arith"):
    pytest.importorskip(module)

from areal_core.config.loader import load_config
from areal_core.config.schema import SFTConfig
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def registry():
    registry = build_registry()
    set_registry(registry)
    yield registry
    set_registry(None)


def test_quickstart_configs_validate(registry):
    rl = load_config(config_path=EXAMPLES / "quickstart.yaml", env_prefix=None, registry=registry)
    assert rl.run.rollout.max_head_offpolicyness == 1
    assert rl.components["reward"].name == "arith" and rl.components["algorithm"].name == "grpo"
    sft = load_config(SFTConfig, config_path=EXAMPLES / "quickstart_sft.yaml", env_prefix=None, registry=registry)
    assert sft.run.output_path == rl.run.model_path  # stage 2 starts from stage 1's export


def test_quickstart_pipeline_runs_on_a_tiny_model(tmp_path, registry):
    from areal_arith.cli import prepare
    from areal_core.trainer.entry import run_training
    from areal_core.trainer.plot import plot_run
    from areal_core.trainer.sft import run_sft

    data = prepare(tmp_path / "data", size="0.2m", n_train=64, n_valid=8, n_sft=64)
    where = [f"fileroot={tmp_path / 'runs'}", "experiment_name=qs"]
    sft = load_config(SFTConfig, config_path=EXAMPLES / "quickstart_sft.yaml", env_prefix=None, registry=registry,
                      overrides=[*where, f"model_path={data / 'model'}", f"output_path={tmp_path / 'sft'}",
                                 f"train_dataset.path={data / 'sft.jsonl'}", "trainer.total_steps=3",
                                 "trainer.batch_size=16"])
    sft_model = run_sft(sft, registry=registry)
    rl = load_config(config_path=EXAMPLES / "quickstart.yaml", env_prefix=None, registry=registry,
                     overrides=[*where, f"model_path={sft_model}", f"train_dataset.path={data / 'train.jsonl'}",
                                f"valid_dataset.path={data / 'valid.jsonl'}", "trainer.total_steps=3",
                                "trainer.eval_every=2", "rollout.batch_size=2", "workflow.n_samples=4",
                                "inference.max_batch=16"])
    run_dir = run_training(rl, registry=registry)

    metrics = read_metrics(run_dir)
    assert [m["eval/n"] for m in metrics if "eval/reward_mean" in m] == [8, 8, 8]  # steps 0, 2, 3
    assert [m["step"] for m in metrics if "train/reward/mean" in m] == [1, 2, 3]
    assert all(m["rollout/version_lag_max"] <= 1 for m in metrics if "rollout/version_lag_max" in m)
    audit = [json.loads(line) for line in (run_dir / "trained_samples.jsonl").read_text().splitlines()]
    trained = [sid for row in audit for sid in row["sample_ids"]]
    assert len(trained) == len(set(trained)) == 6  # 3 steps x 2 prompts, none twice
    assert plot_run(run_dir).is_file()


def test_quickstart_trains_lora_with_adapter_only_sync(tmp_path, registry):
    """``actor.lora`` + ``weight_sync.type=adapter`` on the embedded server: each step moves only
    the adapter, and the server's merged weights equal the trainer's exactly
    (``trainer.verify_weight_sync`` compares checksums after every sync)."""
    from areal_arith.cli import prepare
    from areal_core.trainer.entry import run_training

    data = prepare(tmp_path / "data", size="0.2m", n_train=64, n_valid=8, n_sft=8)
    rl = load_config(config_path=EXAMPLES / "quickstart.yaml", env_prefix=None, registry=registry, overrides=[
        f"fileroot={tmp_path / 'runs'}", "experiment_name=qs_lora", f"model_path={data / 'model'}",
        f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}",
        "trainer.total_steps=3", "trainer.eval_every=3", "rollout.batch_size=2", "workflow.n_samples=4",
        "inference.max_batch=16", "actor.lora.enabled=true", "actor.lora.r=8", "weight_sync.type=adapter",
        "trainer.verify_weight_sync=true"])
    metrics = read_metrics(run_training(rl, registry=registry))

    assert [m["step"] for m in metrics if "train/reward/mean" in m] == [1, 2, 3]
    sync_bytes = [m["weight_sync/bytes"] for m in metrics if "weight_sync/bytes" in m]
    model_bytes = sum(f.stat().st_size for f in (data / "model").glob("*.safetensors"))
    assert len(sync_bytes) == 3 and all(0 < b < model_bytes / 2 for b in sync_bytes)
    assert all(m["timing/weight_sync_s"] > 0 and "timing/export_weights_s" in m for m in metrics
               if "weight_sync/bytes" in m)


def test_a_layout_the_components_cannot_run_is_refused_naming_the_part(tmp_path, registry):
    """The embedded server and the fsdp engine are data parallel only: a t in their allocation part
    is refused before any process starts (inference) or the model loads (train engine)."""
    from areal_arith.cli import prepare
    from areal_core.api.types import RunContext
    from areal_core.config.allocation import apply_allocation, layout_of
    from areal_core.errors import ArealError
    from areal_core.trainer.entry import run_training
    from areal_core.trainer.rl import create_train_engine

    data = prepare(tmp_path / "data", size="0.2m", n_train=8, n_valid=0, n_sft=0)
    where = [f"fileroot={tmp_path / 'runs'}", "experiment_name=qs", f"model_path={data / 'model'}",
             f"train_dataset.path={data / 'train.jsonl'}", "valid_dataset=null"]
    rl = load_config(config_path=EXAMPLES / "quickstart.yaml", env_prefix=None, registry=registry,
                     overrides=[*where, "scheduler.allocation=embedded:d1t2+fsdp:d1"])
    with pytest.raises(ArealError, match=r"part 'inference=embedded:d1t2': inference backend 'embedded' cannot run "
                                         r"t2 \(tensor parallel\)"):
        run_training(rl, registry=registry)
    assert not list((tmp_path / "runs").rglob("logs/*.log")), "no process may start"

    rl = load_config(config_path=EXAMPLES / "quickstart.yaml", env_prefix=None, registry=registry,
                     overrides=[*where, "scheduler.allocation=embedded:d1+fsdp:d1t2"])
    apply_allocation(rl)
    context = RunContext(str(data / "model"), 0, 1, tmp_path, rank=0, world_size=2,
                         parallel=layout_of(rl, "actor", 2))
    with pytest.raises(ArealError, match=r"part 'actor=fsdp:d1t2': train engine 'fsdp' \(actor\) cannot run t2"):
        create_train_engine(rl, "actor", context, registry)
