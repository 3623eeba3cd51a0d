"""The generic registry: discovery through every hook, entry points, duplicates, failures, errors."""

from __future__ import annotations

import subprocess

import pytest

from areal_core import hookimpl
from areal_core.errors import ArealError
from areal_core.registry import KINDS, Component, build_registry, get_registry, set_registry
from coretest_support import PYTHON, subprocess_env


class EveryHookPlugin:
    """Implements every provider hook: one component per kind, with lazy references that do not exist."""

    @hookimpl
    def areal_register_train_engines(self):
        return [Component("t_engine", "no_such_module:Engine", None, "train engine")]

    @hookimpl
    def areal_register_inference_backends(self):
        return [Component("t_backend", "no_such_module:Backend", None, "backend")]

    @hookimpl
    def areal_register_algorithms(self):
        return [Component("t_algo", "no_such_module:Algo", None, "algorithm")]

    @hookimpl
    def areal_register_rewards(self):
        return [Component("t_reward", "no_such_module:Reward", None, "reward")]

    @hookimpl
    def areal_register_workflows(self):
        return [Component("t_workflow", "no_such_module:Workflow", None, "workflow")]

    @hookimpl
    def areal_register_schedulers(self):
        return [Component("t_sched", "no_such_module:Scheduler", None, "scheduler")]

    @hookimpl
    def areal_register_devices(self):
        return [Component("t_device", "no_such_module:Device", None, "device")]

    @hookimpl
    def areal_register_metric_sinks(self):
        return [Component("t_sink", "no_such_module:Sink", None, "sink")]

    @hookimpl
    def areal_register_pair_losses(self):
        return [Component("t_pair", "no_such_module:PairLoss", None, "pair loss")]


EXPECTED = {"train_engine": "t_engine", "inference_backend": "t_backend", "algorithm": "t_algo", "reward": "t_reward",
            "workflow": "t_workflow", "scheduler": "t_sched", "device": "t_device", "metric_sink": "t_sink",
            "pair_loss": "t_pair"}


def test_every_hook_registers_its_kind_without_importing_factories():
    registry = build_registry(extra_plugins=[(EveryHookPlugin(), "every-hook")], entry_points=False)
    assert set(EXPECTED) == set(KINDS)
    for kind, name in EXPECTED.items():
        record = registry.get(kind, name)
        assert (record.kind, record.distribution) == (kind, "every-hook")
    with pytest.raises(ArealError, match=r"cannot import reward 't_reward' factory 'no_such_module:Reward': ModuleNotFoundError"):
        registry.create("reward", "t_reward")


def test_builtins_come_first_and_are_labelled_areal_core():
    registry = build_registry(entry_points=False)
    assert {"cpu", "cuda"} <= set(registry.names("device"))
    assert {"jsonl", "wandb", "tensorboard"} <= set(registry.names("metric_sink"))
    assert all(c.distribution == "areal-core" for c in registry.components.values())


def test_duplicate_names_are_fatal_and_name_both_distributions():
    class Again:
        @hookimpl
        def areal_register_rewards(self):
            return [Component("t_reward", "other_pkg:Reward", None, "same name")]

    with pytest.raises(ArealError) as info:
        build_registry(extra_plugins=[(EveryHookPlugin(), "dist-one"), (Again(), "dist-two")], entry_points=False)
    message = str(info.value)
    assert "duplicate reward name 't_reward'" in message and "dist-one" in message and "dist-two" in message


def test_duplicate_of_a_builtin_is_fatal():
    class ShadowsCPU:
        @hookimpl
        def areal_register_devices(self):
            return [Component("cpu", "mine:CPU", None, "my cpu")]

    with pytest.raises(ArealError, match=r"duplicate device name 'cpu'.*areal-core.*shadow-dist"):
        build_registry(extra_plugins=[(ShadowsCPU(), "shadow-dist")], entry_points=False)


def test_plugin_whose_hook_fails_is_recorded_and_named_in_unknown_name_errors():
    class Broken:
        @hookimpl
        def areal_register_train_engines(self):
            raise ImportError("No module named 'megatron.core'")

    registry = build_registry(extra_plugins=[(EveryHookPlugin(), "every-hook"), (Broken(), "areal-broken 0.3")], entry_points=False)
    assert [f.distribution for f in registry.failures] == ["areal-broken 0.3"]
    with pytest.raises(ArealError) as info:
        registry.get("train_engine", "t_engnie")
    message = str(info.value)
    assert "unknown train engine 't_engnie'" in message
    assert "available train engines: t_engine" in message
    assert "did you mean 't_engine'?" in message
    assert "areal-broken 0.3 failed to load: ImportError: No module named 'megatron.core'" in message


def test_unknown_first_party_name_says_which_package_to_install():
    registry = build_registry(entry_points=False)
    with pytest.raises(ArealError, match=r"'megatron' is provided by areal-megatron: pip install areal-megatron"):
        registry.get("train_engine", "megatron")
    with pytest.raises(ArealError, match=r"unknown component kind 'engine'"):
        registry.get("engine", "fsdp")


def test_entry_points_are_discovered_with_distribution_and_version(fake_dist):
    fake_dist("areal-toy", "1.2.3", {"toy": "toyplugin:PLUGIN"})
    fake_dist("areal-fails", "0.0.1", {"fails": "module_that_raises"},
              {"module_that_raises": "raise ImportError('needs the frobnicate package')\n"})
    registry = build_registry()
    record = registry.get("reward", "toy_reward")
    assert (record.distribution, record.version, record.summary) == ("areal-toy", "1.2.3", "1 when the completion is the target")
    failure = next(f for f in registry.failures if f.entry_point == "fails")
    assert failure.distribution == "areal-fails 0.0.1"
    assert failure.error == "ImportError: needs the frobnicate package"


def test_create_validates_the_section_with_the_registered_model(toy_registry):
    backend = toy_registry.create("inference_backend", "toy_backend", {"n_servers": 2})
    assert backend.config.n_servers == 2
    with pytest.raises(ArealError, match=r"inference_backend\.n_server: Extra inputs are not permitted"):
        toy_registry.create("inference_backend", "toy_backend", {"n_server": 2})


def test_set_registry_replaces_the_process_wide_registry():
    mine = build_registry(extra_plugins=[(EveryHookPlugin(), "every-hook")], entry_points=False)
    set_registry(mine)
    try:
        assert get_registry() is mine
    finally:
        set_registry(None)
    assert get_registry() is not mine


def test_import_areal_core_and_discovery_do_not_import_torch():
    code = ("import sys, areal_core, areal_core.cli; from areal_core.registry import build_registry; "
            "r = build_registry(entry_points=False); r.get('device', 'cpu').load_factory(); "
            "r.get('metric_sink', 'wandb').load_config_model(); "
            "heavy = [m for m in ('torch', 'transformers', 'wandb') if m in sys.modules]; print(heavy); assert not heavy")
    out = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
