"""The generic registry: discovery through every hook, entry points, duplicates, failures, errors."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import Field

from areal_core import first_party, hookimpl
from areal_core.config.base import ComponentConfig
from areal_core.errors import ArealError
from areal_core.registry import (
    KINDS,
    Component,
    build_registry,
    get_registry,
    set_registry,
)
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


def test_a_duplicate_name_is_a_conflict_that_fails_only_its_users():
    class Again:
        @hookimpl
        def areal_register_rewards(self):
            return [Component("t_reward", "other_pkg:Reward", None, "same name")]

    registry = build_registry(extra_plugins=[(EveryHookPlugin(), "dist-one"), (Again(), "dist-two")], entry_points=False)
    assert registry.get("train_engine", "t_engine").distribution == "dist-one"  # the rest works
    assert "t_reward" not in registry.names("reward")
    with pytest.raises(ArealError) as info:
        registry.create("reward", "t_reward")
    message = str(info.value)
    assert message.startswith("reward name 't_reward' is registered 2 times: by plugin EveryHookPlugin (dist-one) "
                              "(no_such_module:Reward) and by plugin Again (dist-two) (other_pkg:Reward)")
    assert message.endswith("uninstall one of dist-one, dist-two")


def test_a_duplicate_within_one_package_says_rename():
    class Twice:
        @hookimpl
        def areal_register_rewards(self):
            return [Component("same", "pkg.a:Reward", None, "first"), Component("same", "pkg.b:Reward", None, "second")]

    registry = build_registry(extra_plugins=[(Twice(), "areal-twice")], entry_points=False)
    with pytest.raises(ArealError, match=r"registered 2 times.*both registrations come from areal-twice: rename one of them"):
        registry.get("reward", "same")


def test_a_duplicate_of_a_builtin_says_uninstall_the_plugin():
    class ShadowsCPU:
        @hookimpl
        def areal_register_devices(self):
            return [Component("cpu", "mine:CPU", None, "my cpu")]

    registry = build_registry(extra_plugins=[(ShadowsCPU(), "shadow-dist")], entry_points=False)
    assert list(registry.conflicts) == [("device", "cpu")]
    with pytest.raises(ArealError, match=r"device name 'cpu' is registered 2 times: by plugin areal_core.builtins \(areal-core "
                                         r".*\(areal_core.devices:CPUDevice\).*built-in device keeps the name: uninstall shadow-dist"):
        registry.get("device", "cpu")


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
    with pytest.raises(ArealError, match=r"'fsdp' is provided by areal-fsdp: pip install areal-fsdp "
                                         r"\(in a source checkout: pip install -e plugins/areal-fsdp\)"):
        registry.get("train_engine", "fsdp")
    with pytest.raises(ArealError, match=r"did you mean 'sglang'\? \(provided by areal-sglang: pip install areal-sglang"):
        registry.get("inference_backend", "sglangg")
    with pytest.raises(ArealError, match=r"unknown component kind 'engine'"):
        registry.get("engine", "fsdp")


def test_unknown_name_hints_come_from_what_is_installed():
    class OldFSDP:  # an installed areal-fsdp that does not register the name first_party.json lists
        @hookimpl
        def areal_register_train_engines(self):
            return [Component("fsdp_v0", "old:Engine", None, "old")]

    registry = build_registry(extra_plugins=[(OldFSDP(), "areal-fsdp")], entry_points=False)
    with pytest.raises(ArealError, match=r"the installed areal-fsdp does not register it: upgrade it"):
        registry.get("train_engine", "fsdp")
    class BrokenFSDP:
        @hookimpl
        def areal_register_train_engines(self):
            raise ImportError("No module named 'torch.distributed.fsdp'")

    broken = build_registry(extra_plugins=[(BrokenFSDP(), "areal-fsdp 0.1.0")], entry_points=False)
    with pytest.raises(ArealError) as info:
        broken.get("train_engine", "fsdp")
    assert "'fsdp' is provided by areal-fsdp, which is installed but failed to load (below)" in str(info.value)
    assert "did you mean" not in str(info.value)
    with pytest.raises(ArealError, match=r"'cpu' is a device \(from areal-core\), not a train engine"):
        registry.get("train_engine", "cpu")
    with pytest.raises(ArealError, match=r"install that plugin \(pip install <plugin>\)"):
        registry.get("reward", "nobody_provides_this")


def test_first_party_json_is_up_to_date():
    assert first_party.render(first_party.generate()) == first_party.JSON_PATH.read_text(), (
        "areal_core/first_party.json is stale: regenerate it with `python -m areal_core.first_party`")
    assert "areal-fsdp" in first_party.load()["distributions"] and first_party.providers("train_engine")["fsdp"] == "areal-fsdp"


@pytest.mark.parametrize("source, expected", [
    ("@hookimpl\ndef areal_register_reward():\n    return []\n",
     "`areal_register_reward` is not an areal hook; did you mean `areal_register_rewards`?"),
    ("def areal_register_rewards():\n    return []\n",
     "`areal_register_rewards` lacks @hookimpl, so areal never calls it: decorate it with `hookimpl` from areal_core.plugin"),
    ("def areal_register_rewrds():\n    return []\n",
     "`areal_register_rewrds` is not an areal hook; did you mean `areal_register_rewards`?; it also lacks @hookimpl"),
    ("@hookimpl\ndef areal_frobnicate():\n    return []\n",
     "`areal_frobnicate` is not an areal hook; areal's hooks are areal_register_algorithms, "),
    ("@hookimpl\ndef areal_register_rewards(config):\n    return []\n",
     ("hookimpl definition: areal_register_rewards(config); "
      "Argument(s) {'config'} are declared in the hookimpl but can not be found in the hookspec")),
], ids=["misspelled", "undecorated", "misspelled-undecorated", "invented", "wrong-arguments"])
def test_a_hook_areal_would_never_call_fails_naming_plugin_hook_and_closest_name(fake_dist, source, expected):
    module = f"typo_plugin_{abs(hash(source))}"  # one module per case: imported modules stay cached
    fake_dist("areal-typo", "0.3.0", {"typo": module}, {module: f"from areal_core.plugin import Component, hookimpl\n{source}"})
    with pytest.raises(ArealError) as info:
        build_registry()
    message = str(info.value)
    assert message.startswith("plugins define hooks that areal would never call")
    assert f"plugin {module} (areal-typo 0.3.0): {expected}" in message


def test_every_bad_hook_is_reported_at_once_and_helpers_are_not_hooks():
    class TwoTypos:
        @hookimpl
        def areal_register_reward(self):
            return []

        @hookimpl
        def areal_register_metric_sink(self):
            return []

        def make_reward(self):  # helpers are not hooks
            return None

        def areal_train(self):  # nor is an areal_* helper that looks like no hook
            return None

    with pytest.raises(ArealError) as info:
        build_registry(extra_plugins=[(TwoTypos(), "areal-typos")], entry_points=False)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        ("  plugin TwoTypos (areal-typos): `areal_register_metric_sink` is not an areal hook; "
         "did you mean `areal_register_metric_sinks`?"),
        ("  plugin TwoTypos (areal-typos): `areal_register_reward` is not an areal hook; "
         "did you mean `areal_register_rewards`?"),
    ]


def test_a_config_default_of_the_wrong_type_is_rejected_naming_plugin_model_and_field():
    class FastConfig(ComponentConfig):
        lr: float = Field("fast", description="learning rate")  # type: ignore[assignment]
        steps: int = Field(3, description="steps")

    class WrongDefault:
        @hookimpl
        def areal_register_algorithms(self):
            return [Component("fast", "pkg:Algo", FastConfig, "wrong default")]

    registry = build_registry(extra_plugins=[(WrongDefault(), "areal-fast")], entry_points=False)
    with pytest.raises(ArealError) as info:
        registry.get("algorithm", "fast").load_config_model()
    message = str(info.value)
    assert message.startswith("algorithm 'fast' from plugin WrongDefault (areal-fast): config model "
                              "test_registry:test_a_config_default_of_the_wrong_type_is_rejected_naming_plugin_model_and_field.<locals>.FastConfig")
    assert "\n  lr: default 'fast' is invalid: Input should be a valid number" in message
    assert "steps" not in message


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
