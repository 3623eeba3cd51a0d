"""Pre-flight checks (issue 16): bad model directories, datasets, batch arithmetic and run names
fail ``areal train`` before any process starts, every problem at once, each naming its field."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from areal_core.config.loader import ConfigError, load_config
from areal_core.errors import ArealError
from areal_core.testing.tiny import make_tiny_model
from areal_core.trainer.entry import run_training
from areal_core.trainer.preflight import batch_problems


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def start(tmp_path, toy_registry, model, dataset, **extra):
    """``areal train`` as far as it gets; returns the error. Nothing may have been started."""
    config = {"model_path": str(model), "actor": {"name": "toy_engine"}, "algorithm": {"name": "toy_algo"},
              "inference": {"name": "toy_backend"}, "workflow": {"name": "rlvr", "prompt_field": "question"},
              "reward": {"name": "toy_reward"}, "scheduler": {"name": "toy_sched"},
              "train_dataset": {"path": str(dataset)}, "fileroot": str(tmp_path / "runs"), **extra}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(config_path=tmp_path / "run.yaml", env_prefix=None, registry=toy_registry)
    with pytest.raises(ArealError) as err:
        run_training(cfg, registry=toy_registry)
    assert not (tmp_path / "runs").exists()  # no run directory, no logs, no process
    return str(err.value)


def test_a_good_model_and_dataset_pass(tmp_path, toy_registry, tiny):
    data = write_rows(tmp_path / "train.jsonl", [{"question": "1+1?"}, {"messages": [{"role": "user", "content": "hi"}]}])
    cfg_dir = tmp_path / "ok"
    cfg_dir.mkdir()
    from areal_core.trainer.preflight import check_run

    (cfg_dir / "run.yaml").write_text(yaml.safe_dump({
        "model_path": str(tiny), "actor": {"name": "toy_engine"}, "algorithm": {"name": "toy_algo"},
        "inference": {"name": "toy_backend"}, "workflow": {"name": "rlvr", "prompt_field": "question"},
        "reward": {"name": "toy_reward"}, "train_dataset": {"path": str(data)}}))
    check_run(load_config(config_path=cfg_dir / "run.yaml", env_prefix=None, registry=toy_registry))


@pytest.mark.parametrize("breakage,words", [
    ("garbage config", "does not parse as JSON"),
    ("unknown model_type", "model_type 'qwen9', which transformers"),
    ("no weights", "has no weight files"),
    ("empty dir", "has no config.json"),
])
def test_broken_model_directories(tmp_path, toy_registry, tiny, breakage, words):
    model = tmp_path / "model"
    if breakage == "empty dir":
        model.mkdir()
    else:
        shutil.copytree(tiny, model)
    if breakage == "garbage config":
        (model / "config.json").write_text("{not json")
    elif breakage == "unknown model_type":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "qwen9"}))
    elif breakage == "no weights":
        for f in model.glob("*.safetensors"):
            f.unlink()
    data = write_rows(tmp_path / "train.jsonl", [{"question": "q"}])
    message = start(tmp_path, toy_registry, model, data)
    assert "model_path:" in message and words in message


def test_dataset_problems_are_all_reported(tmp_path, toy_registry):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    message = start(tmp_path, toy_registry, tmp_path / "no-model", empty)
    assert "model_path: " in message and "is not a Hugging Face model directory (no such directory)" in message
    assert "train_dataset.path: " in message and "is empty (no rows)" in message  # both problems at once


def test_rows_without_the_prompt_field(tmp_path, toy_registry, tiny):
    data = write_rows(tmp_path / "train.jsonl", [{"question": "q"}, {"prompt": "p"}, {"text": "t"}])
    message = start(tmp_path, toy_registry, tiny, data)
    assert "train_dataset.path: 2 of 3 rows" in message and "neither 'question' (workflow.prompt_field)" in message
    assert "rows 1, 2" in message


def test_n_minibatches_larger_than_the_batch():
    grpo = pytest.importorskip("areal_grpo.presets")
    config = grpo.PRESETS["grpo"][0](name="grpo", n_minibatches=64)
    (problem,) = batch_problems(batch_size=4, n_samples=4, algorithm=config)
    assert "algorithm.n_minibatches=64 exceeds the 16 sequences" in problem
    assert batch_problems(batch_size=4, n_samples=4, algorithm=grpo.PRESETS["grpo"][0](name="grpo", n_minibatches=16)) == []


@pytest.mark.parametrize("name", ["../../../x", "a/b", "..", ""])
def test_run_names_cannot_escape_fileroot(tmp_path, toy_registry, name):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "model_path": "m", "actor": {"name": "toy_engine"}, "algorithm": {"name": "toy_algo"},
        "inference": {"name": "toy_backend"}, "workflow": {"name": "toy_workflow"}, "reward": {"name": "toy_reward"},
        "train_dataset": {"path": "d"}, "trial_name": name}))
    with pytest.raises(ConfigError, match="trial_name.*must stay inside fileroot"):
        load_config(config_path=tmp_path / "run.yaml", env_prefix=None, registry=toy_registry)
