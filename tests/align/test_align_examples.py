"""The alignment examples' wiring (examples/align_*.yaml, docs/alignment.md) on the 0.2m model.

Configs validate as shipped; then SFT -> DPO, SFT -> RM -> RL rewarded by the RM, and
distillation from the DPO model run a few steps each with the examples' own configs and tiny
overrides. Whether they *learn* is measured by the documented commands (docs/alignment.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

for module in ("areal_embedded", "areal_fsdp", "areal_grpo", "areal_arith"):
    pytest.importorskip(module)

from areal_core.config.loader import load_config
from areal_core.config.schema import DPOConfig, RMConfig, SFTConfig
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def registry():
    registry = build_registry()
    set_registry(registry)
    yield registry
    set_registry(None)


def test_example_configs_validate_and_chain(registry):
    def load(model, name):
        return load_config(model, config_path=EXAMPLES / name, env_prefix=None, registry=registry)
    sft = load(SFTConfig, "quickstart_sft.yaml")
    dpo, rm = load(DPOConfig, "align_dpo.yaml"), load(RMConfig, "align_rm.yaml")
    rl_rm = load_config(config_path=EXAMPLES / "align_rl_rm.yaml", env_prefix=None, registry=registry)
    distill = load_config(config_path=EXAMPLES / "align_distill.yaml", env_prefix=None, registry=registry)
    assert dpo.run.model_path == rm.run.model_path == distill.run.model_path == sft.run.output_path
    assert dpo.components["loss"].name == "dpo" and rm.components["loss"].name == "bradley_terry"
    assert rm.components["actor"].critic
    assert rl_rm.components["reward"].name == "reward_model" and rl_rm.components["reward"].path == rm.run.output_path
    assert distill.components["algorithm"].name == "distill" and distill.components["algorithm"].rl_coef == 0
    assert distill.components["ref"].path == dpo.run.output_path


def test_the_example_pipelines_run_on_a_tiny_model(tmp_path, registry):
    from areal_arith.cli import prepare, write_pairs
    from areal_arith.evaluate import greedy_accuracy
    from areal_core.trainer.entry import run_training
    from areal_core.trainer.offline import run_offline

    data = prepare(tmp_path / "data", size="0.2m", n_train=64, n_valid=8, n_sft=64)
    write_pairs(data, "far", 0)
    where = [f"fileroot={tmp_path / 'runs'}", "experiment_name=al"]

    def offline(command, model, name, out, *extra):
        cfg = load_config(model, config_path=EXAMPLES / name, env_prefix=None, registry=registry,
                          overrides=[*where, f"output_path={tmp_path / out}", "trainer.total_steps=2",
                                     "trainer.batch_size=8", "trainer.eval_every=1", *extra])
        return run_offline(command, cfg, registry=registry)

    sft = offline("sft", SFTConfig, "quickstart_sft.yaml", "sft", f"model_path={data / 'model'}",
                  f"train_dataset.path={data / 'sft.jsonl'}")
    write_pairs(data, "model", 0, model=sft)  # the SFT model's own mistakes (random init: all wrong)
    def pairs(kind):
        return [f"model_path={sft}", f"train_dataset.path={data / f'pairs_{kind}_train.jsonl'}",
                              f"valid_dataset.path={data / f'pairs_{kind}_valid.jsonl'}"]
    dpo = offline("dpo", DPOConfig, "align_dpo.yaml", "dpo", *pairs("model"))
    rm = offline("rm", RMConfig, "align_rm.yaml", "rm", *pairs("far"))
    for prefix in ("dpo", "rm"):  # trial names of the example configs
        rows = read_metrics(tmp_path / "runs" / "al" / prefix)
        assert [r["step"] for r in rows] == [0, 1, 2]
        assert all(0 <= r[f"{prefix}/eval_accuracy"] <= 1 for r in rows)
    assert 0.0 <= greedy_accuracy(dpo, data / "valid.jsonl", limit=4) <= 1.0

    rl_args = [*where, f"model_path={sft}", f"train_dataset.path={data / 'train.jsonl'}", "trainer.total_steps=2",
               "rollout.batch_size=2", "workflow.n_samples=4", "inference.max_batch=16"]
    rl = load_config(config_path=EXAMPLES / "align_rl_rm.yaml", env_prefix=None, registry=registry,
                     overrides=[*rl_args, f"reward.path={rm}"])
    rewards = [m["train/reward/mean"] for m in read_metrics(run_training(rl, registry=registry))
               if "train/reward/mean" in m]
    assert len(rewards) == 2 and len(set(rewards)) == 2  # real-valued RM scores, not 0/1

    distill = load_config(config_path=EXAMPLES / "align_distill.yaml", env_prefix=None, registry=registry,
                          overrides=[*rl_args, f"ref.path={dpo}", f"valid_dataset.path={data / 'valid.jsonl'}",
                                     "trainer.eval_every=1"])
    metrics = read_metrics(run_training(distill, registry=registry))
    assert [m["step"] for m in metrics if "train/distill/reverse_kl" in m] == [1, 2]
    assert [m["step"] for m in metrics if "eval/reward_mean" in m] == [0, 1, 2]
