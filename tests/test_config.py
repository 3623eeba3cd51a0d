"""Config loading: layers and precedence, typing of text values, both validation passes, errors."""

from __future__ import annotations

import pytest
import yaml

from areal_core.config.loader import ConfigError, load_config, parse_override, save_resolved
from areal_core.errors import ArealError


def load(toy_registry, path=None, overrides=()):
    return load_config(config_path=path, overrides=list(overrides), registry=toy_registry)


def test_precedence_defaults_yaml_env_cli(toy_registry, run_yaml, monkeypatch):
    bare = run_yaml()
    assert load(toy_registry, bare).run.rollout.batch_size == 8  # model default
    with_file = run_yaml({"rollout": {"batch_size": 4, "max_retries": 3}})
    assert load(toy_registry, with_file).run.rollout.batch_size == 4
    monkeypatch.setenv("AREAL_ROLLOUT__BATCH_SIZE", "5")
    cfg = load(toy_registry, with_file)
    assert (cfg.run.rollout.batch_size, cfg.run.rollout.max_retries) == (5, 3)  # env wins key by key, file keeps the rest
    assert load(toy_registry, with_file, ["rollout.batch_size=6"]).run.rollout.batch_size == 6


def test_env_reaches_into_component_sections_and_is_typed_by_the_plugin_model(toy_registry, run_yaml, monkeypatch):
    monkeypatch.setenv("AREAL_ACTOR__OPTIMIZER__LR", "1e-5")
    monkeypatch.setenv("areal_actor__tag", "123")  # case-insensitive; a str field keeps the text
    monkeypatch.setenv("AREAL_DEBUG", "1")  # names no config field: not config
    actor = load(toy_registry, run_yaml()).components["actor"]
    assert actor.optimizer.lr == 1e-5 and actor.tag == "123"


def test_overrides_are_yaml_except_for_string_fields(toy_registry, run_yaml):
    cfg = load(toy_registry, run_yaml(), [
        "trial_name=007", "seed=7", "recover=off", "actor.tag=1e3", "actor.optimizer.lr=3e-4",
        "inference.extra_args=[--flag, '2']", "metrics.sinks=[{name: wandb, mode: offline}]", "metrics.sinks.1.name=tensorboard",
    ])
    assert (cfg.run.trial_name, cfg.run.seed, cfg.run.recover) == ("007", 7, "off")
    assert cfg.components["actor"].tag == "1e3" and cfg.components["actor"].optimizer.lr == 3e-4
    assert cfg.components["inference"].extra_args == ["--flag", "2"]
    assert [c.name for c in cfg.of_kind("metric_sink")] == ["wandb", "tensorboard"]
    assert cfg.components["metrics.sinks.0"].mode == "offline"


def test_yaml_files_use_yaml_1_2_scalars(toy_registry, tmp_path, run_yaml):
    path = run_yaml({"recover": "off"})
    text = path.read_text().replace("recover: 'off'", "recover: off") + "actor: {name: toy_engine, optimizer: {lr: 1e-5}}\n"
    path.write_text(text.replace("actor:\n  name: toy_engine\n", ""))
    cfg = load(toy_registry, path)
    assert cfg.run.recover == "off" and cfg.components["actor"].optimizer.lr == 1e-5


def test_all_errors_of_both_passes_at_once_with_paths_and_sources(toy_registry, run_yaml):
    path = run_yaml({"rollout": {"batch_size": 0, "typo_field": 1}, "seed": "abc", "algorithm": {"name": "toy_algo", "mode": "tokens"},
                     "workflow": {"name": "toy_workflow", "n_samples": "many"}})
    with pytest.raises(ConfigError) as info:
        load(toy_registry, path, ["actor.optimizer.lr=-1", "reward.name=toy_rewad", "actor.unknown.deep=1"])
    errors = info.value.errors
    expected = {
        "rollout.batch_size: Input should be greater than or equal to 1",
        "rollout.typo_field: Extra inputs are not permitted",
        "seed: Input should be a valid integer",
        "algorithm.mode: Input should be 'token' or 'sequence'",
        "workflow.n_samples: Input should be a valid integer",
        "actor.optimizer.lr: Input should be greater than 0",
        "actor.unknown: Extra inputs are not permitted",
        "reward: unknown reward 'toy_rewad'",
    }
    for start in expected:
        assert any(e.startswith(start) for e in errors), f"missing {start!r} in {errors}"
    assert len(errors) == len(expected), errors
    assert any(e.startswith("rollout.batch_size") and f"[{path}:" in e for e in errors), "file errors name file:line"
    assert any(e.startswith("actor.optimizer.lr") and "[override 'actor.optimizer.lr=-1']" in e for e in errors)
    assert "did you mean 'toy_reward'?" in str(info.value)
    assert str(info.value).startswith(f"invalid config ({len(expected)} errors):")


def test_error_line_numbers_point_at_the_key(toy_registry, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model_path: m\nactor: {name: toy_engine}\nalgorithm: {name: toy_algo}\ninference: {name: toy_backend}\n"
        "workflow: {name: toy_workflow}\nreward: {name: toy_reward}\nscheduler: {name: toy_sched}\n"
        "train_dataset: {path: d}\nrollout:\n  batch_size: -3\n"
    )
    with pytest.raises(ConfigError, match=rf"rollout\.batch_size: .*\[{path}:10\]"):
        load(toy_registry, path)


@pytest.mark.parametrize("text, message", [
    ("actor: {name: x\nseed: 1\n", r"run\.yaml: line 2, column 5: malformed YAML"),
    ("seed: 1\n  bad indent: 2\n", r"run\.yaml: line 2, column 13: malformed YAML: mapping values are not allowed here"),
    ("seed: 1\nseed: 2\n", r"run\.yaml:2: duplicate key 'seed' \(first set on line 1\)"),
    ("- a\n- b\n", r"run\.yaml:1: a config file must be a mapping of keys to values, got a list"),
])
def test_malformed_yaml_is_one_clear_error(toy_registry, tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ArealError, match=message) as info:
        load(toy_registry, path)
    assert not isinstance(info.value, ConfigError)


def test_missing_config_file(toy_registry, tmp_path):
    with pytest.raises(ArealError, match=r"cannot read config file '.*nope\.yaml': No such file"):
        load(toy_registry, tmp_path / "nope.yaml")


def test_component_sections_need_a_known_name(toy_registry, run_yaml):
    with pytest.raises(ConfigError) as info:
        load(toy_registry, run_yaml({"actor": {"optimizer": {"lr": 1}}, "critic": {"name": "fsdp"}, "inference": "toy_backend"}))
    text = str(info.value)
    assert "actor.name: the registered name of the train engine to use is required (missing); available: toy_engine" in text
    assert "critic: unknown train engine 'fsdp'" in text and "pip install areal-fsdp" in text
    assert "inference: Input should be a valid dictionary" in text


def test_sections_in_lists_are_validated_by_their_models(toy_registry, run_yaml):
    with pytest.raises(ConfigError) as info:
        load(toy_registry, run_yaml({"metrics": {"sinks": [{"name": "jsonl"}, {"name": "wandb", "mode": "sometimes", "projet": "x"}]}}))
    assert [e.split(":")[0] for e in info.value.errors] == ["metrics.sinks.1.mode", "metrics.sinks.1.projet"]


def test_bad_overrides_are_reported_with_the_rest(toy_registry, run_yaml):
    with pytest.raises(ConfigError) as info:
        load(toy_registry, run_yaml(), ["no_equals_sign", "=3", "model_path.x=1", "metrics.sinks.5.name=wandb", "seed=x"])
    errors = info.value.errors
    assert any("override 'no_equals_sign': expected dotted.key=value" in e for e in errors)
    assert any("override '=3'" in e for e in errors)
    assert any("cannot set model_path.x: model_path is '/models/tiny', not a mapping" in e for e in errors)
    assert any("cannot set metrics.sinks.5.name: metrics.sinks has 0 items" in e for e in errors)
    assert any(e.startswith("seed: Input should be a valid integer") for e in errors)


def test_parse_override():
    assert parse_override("a.b.0.c=x=y") == (("a", "b", 0, "c"), "x=y")
    assert parse_override("a= ") == (("a",), " ")


def test_resolved_config_round_trips_through_save(toy_registry, run_yaml, tmp_path):
    cfg = load(toy_registry, run_yaml(), ["actor.optimizer.lr=2e-5", "metrics.sinks=[{name: tensorboard}]", "critic={name: toy_engine}"])
    saved = save_resolved(cfg, tmp_path / "run_dir")
    assert saved == tmp_path / "run_dir" / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    assert data["actor"] == {"name": "toy_engine", "optimizer": {"lr": 2e-5, "weight_decay": 0.0}, "max_tokens_per_mb": 1024, "tag": ""}
    assert data["critic"]["name"] == "toy_engine" and data["ref"] is None
    again = load(toy_registry, saved)
    assert again.to_dict() == cfg.to_dict()
    assert set(cfg.kinds) == {"actor", "critic", "algorithm", "inference", "workflow", "reward", "scheduler", "device", "metrics.sinks.0"}


def test_resolved_config_creates_components(toy_registry, run_yaml):
    cfg = load(toy_registry, run_yaml(), ["reward.target=yes"])
    reward = cfg.create("reward")
    assert reward("p", "yes", {}) == 1.0 and reward("p", "no", {}) == 0.0
    assert cfg.create("device").type == "cpu"
    with pytest.raises(ArealError, match="no component section at 'critic'"):
        cfg.create("critic")


def test_environment_can_be_ignored(toy_registry, run_yaml, monkeypatch):
    monkeypatch.setenv("AREAL_SEED", "99")
    assert load_config(config_path=run_yaml(), env_prefix=None, registry=toy_registry).run.seed == 1


def test_override_into_a_defaulted_section_keeps_its_default_name(toy_registry, tmp_path):
    from toyplugin import MINIMAL_RUN

    path = tmp_path / "no_scheduler.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in MINIMAL_RUN.items() if k != "scheduler"}))
    scheduler = load(toy_registry, path, ["scheduler.trainer_ranks=2"]).components["scheduler"]
    assert (scheduler.name, scheduler.trainer_ranks) == ("local", 2)
