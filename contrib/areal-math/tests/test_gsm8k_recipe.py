"""examples/gsm8k_grpo.yaml: it validates with the plugins it names, and a dry run of the same
config, with a tiny stand-in model, the embedded CPU server instead of SGLang and a few local
GSM8K-style problems, trains two steps through ``areal train``'s in-process entry and writes metrics."""

import json
from pathlib import Path

import pytest

import areal_math.plugin
from areal_core.config.loader import load_config
from areal_core.registry import build_registry, set_registry
from areal_math.gsm8k_data import convert

RECIPE = Path(__file__).resolve().parents[3] / "examples" / "gsm8k_grpo.yaml"

# What the dry run changes in the recipe: model, backend, device, precision, sizes. Everything else
# (GRPO options, the reward, η = 2, the rlvr workflow, the data format) is the recipe's own.
DRY_RUN_OVERRIDES = [
    "actor.device=cpu", "actor.dtype=float32", "actor.mixed_precision=false", "actor.max_tokens_per_mb=4096",
    "inference={name: embedded, n_servers: 1, threads: 1, max_batch: 16}",
    "scheduler={name: local}", "device={name: cpu}",
    "rollout.batch_size=2", "rollout.max_concurrent_rollouts=4",
    "workflow.n_samples=2", "workflow.max_new_tokens=16",
    "trainer.total_steps=2", "trainer.eval_every=0", "trainer.save_every=0", "trainer.checkpoint_every=1",
]

PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A pen costs $2. How much do 6 pens cost?", "6 * 2 = <<6*2=12>>12\n#### 12"),
    ("Sam reads 5 pages a day for 4 days. How many pages?", "5 * 4 = <<5*4=20>>20\n#### 20"),
    ("A box holds 9 eggs; 2 break. How many are left?", "9 - 2 = <<9-2=7>>7\n#### 7"),
    ("Ann has 10 dollars and spends 3. How much is left?", "10 - 3 = <<10-3=7>>7\n#### 7"),
    ("There are 8 birds and 5 fly away. How many stay?", "8 - 5 = <<8-5=3>>3\n#### 3"),
]


@pytest.fixture
def registry():
    """Installed plugins plus areal-math (skipped as a duplicate when it is installed too)."""
    registry = build_registry(extra_plugins=[(areal_math.plugin, "areal-math (under test)")])
    set_registry(registry)
    yield registry
    set_registry(None)


@pytest.fixture(scope="module")
def recipe():
    if not RECIPE.is_file():
        pytest.skip(f"{RECIPE} is not here (package installed outside the repository)")
    return RECIPE


def test_first_line_is_the_command(recipe):
    assert recipe.read_text().splitlines()[0] == "# areal train --config examples/gsm8k_grpo.yaml"


def test_recipe_validates_with_its_plugins(recipe, registry):
    for module in ("areal_fsdp", "areal_grpo", "areal_sglang"):
        pytest.importorskip(module)
    cfg = load_config(config_path=recipe, env_prefix=None, registry=registry)
    run, c = cfg.run, cfg.components
    assert run.rollout.max_head_offpolicyness == 2
    assert (c["actor"].name, c["actor"].device, c["actor"].mixed_precision) == ("fsdp", "cuda", True)
    assert (c["algorithm"].name, c["inference"].name, c["reward"].name) == ("grpo", "sglang", "gsm8k")
    assert c["inference"].dtype == "bfloat16" and "--skip-tokenizer-init" in c["inference"].extra_args
    assert (c["workflow"].n_samples, c["workflow"].max_new_tokens) == (4, 1024)
    assert run.train_dataset.path.endswith("train.jsonl") and run.valid_dataset.path.endswith("test.jsonl")


def test_dry_run_with_a_tiny_stand_in_model(recipe, registry, tmp_path):
    for module in ("areal_fsdp", "areal_grpo", "areal_embedded"):
        pytest.importorskip(module)
    from areal_core.metrics import read_metrics
    from areal_core.testing.tiny import make_tiny_model
    from areal_core.trainer.entry import run_training

    model = make_tiny_model(tmp_path / "model", size="0.2m")
    raw = tmp_path / "gsm8k"
    raw.mkdir()
    for split, rows in (("train", PROBLEMS), ("test", PROBLEMS[:2])):
        (raw / f"{split}.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    data = convert(str(raw), tmp_path / "data")
    overrides = [f"model_path={model}", f"fileroot={tmp_path / 'runs'}", f"train_dataset.path={data['train']}",
                 f"valid_dataset.path={data['test']}", *DRY_RUN_OVERRIDES]
    cfg = load_config(config_path=recipe, overrides=overrides, env_prefix=None, registry=registry)
    assert cfg.components["reward"].name == "gsm8k" and cfg.components["algorithm"].eps_clip == 0.4

    run_dir = run_training(cfg, registry=registry)

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert "eval/reward_mean" in metrics[0] and "eval/reward_mean" in metrics[-1]
    assert metrics[0]["eval/failed"] == metrics[-1]["eval/failed"] == 0
    for m in metrics[1:]:
        assert m["rollout/reward_errors"] == 0  # the gsm8k reward found `answer` in every converted row
        assert 0.0 <= m["train/reward/mean"] <= 1.0
        assert m["rollout/version_lag_max"] <= 2
        assert m["throughput/trained_tokens_per_s"] > 0
    assert metrics[-1]["version"] == 2
    assert (run_dir / "export" / "step2" / "config.json").is_file()
