"""The contract suites catch broken components: each broken one below fails the check meant for it."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from areal_core.plugin import Component, hookimpl
from areal_core.registry import build_registry
from areal_core.testing.metric_sink import MetricSinkContract
from areal_core.testing.reward import RewardContract
from coretest_support import PYTHON, subprocess_env

BROKEN_PLUGINS = textwrap.dedent('''
    import math, os, random
    from pydantic import Field
    from areal_core import Component, hookimpl
    from areal_core.api.types import Trajectory
    from areal_core.config.base import ComponentConfig
    from areal_core.launcher.local import LocalScheduler, LocalSchedulerConfig
    from areal_core.testing.device import DeviceContract
    from areal_core.testing.metric_sink import MetricSinkContract
    from areal_core.testing.reward import RewardCase, RewardContract
    from areal_core.testing.scheduler import SchedulerContract
    from areal_core.testing.workflow import WorkflowContract

    class UndocumentedConfig(ComponentConfig):
        threshold: float = 0.5  # no description

    class NaNReward:
        def __init__(self, config): pass
        def __call__(self, prompt, completion, sample): return math.nan

    class RandomReward:
        def __init__(self, config): pass
        def __call__(self, prompt, completion, sample): return random.random()

    class CwdSink:
        def __init__(self, config, run_dir): pass
        def log(self, step, metrics):
            with open("metrics.txt", "a") as f: f.write(str(metrics))
        def close(self): pass

    class WrongBackendDevice:
        type, comm_backend = "cpu", "gloo"
        def __init__(self, config): pass
        def is_available(self): return True
        def memory_stats(self): return {"rss_gib": -1.0}

    class TrainsOnPromptWorkflow:
        def __init__(self, config, reward, tokenizer): self.tokenizer = tokenizer
        async def run_episode(self, engine, sample):
            from areal_core.api.types import ModelRequest
            resp = await engine.agenerate(ModelRequest(self.tokenizer.encode(sample["prompt"])))
            t = Trajectory.from_response(resp, 1.0, group_id=sample["prompt"])
            t.loss_mask = [1] * len(t.loss_mask)
            return [t]

    class LeakyScheduler(LocalScheduler):
        """Drops AREAL_HOST_ADDR from the ranks' env and leaves its processes running on exit
        (they die with the test process: atexit stop_all, PR_SET_PDEATHSIG)."""

        def launch(self, name, argv, env=None, count=1, envs=None):
            env = {k: v for k, v in (env or {}).items() if k != "AREAL_HOST_ADDR"}
            return super().launch(name, argv, env, count, envs)

        def __exit__(self, *exc):
            pass

    class Broken:
        @hookimpl
        def areal_register_schedulers(self):
            return [Component("leaky", LeakyScheduler, LocalSchedulerConfig, "leaks its processes")]

        @hookimpl
        def areal_register_rewards(self):
            return [Component("nan", NaNReward, UndocumentedConfig, "returns NaN"),
                    Component("random", RandomReward, None, "returns noise")]

        @hookimpl
        def areal_register_metric_sinks(self):
            return [Component("cwd", CwdSink, None, "writes into the working directory")]

        @hookimpl
        def areal_register_devices(self):
            return [Component("negative", WrongBackendDevice, None, "negative memory")]

        @hookimpl
        def areal_register_workflows(self):
            return [Component("prompt_trainer", TrainsOnPromptWorkflow, None, "trains on its prompt")]

    class TestNaN(RewardContract):
        plugin, component_name = Broken(), "nan"
        cases = [RewardCase("p", "c", {}, 1.0)]

    class TestRandom(RewardContract):
        plugin, component_name = Broken(), "random"
        cases = [RewardCase("p", "c", {}, 0.5, abs_tol=0.5)]

    class TestCwd(MetricSinkContract):
        plugin, component_name = Broken(), "cwd"

    class TestNegative(DeviceContract):
        plugin, component_name = Broken(), "negative"

    class TestLeaky(SchedulerContract):
        plugin, component_name = Broken(), "leaky"

    class TestPromptTrainer(WorkflowContract):
        plugin, component_name = Broken(), "prompt_trainer"
        samples = [{"prompt": "a b"}, {"prompt": "c d"}]
''')

EXPECTED_FAILURES = {
    "TestNaN::test_config_fields_are_described",
    "TestNaN::test_scores_match_cases",
    "TestNaN::test_scores_are_finite_numbers",
    "TestRandom::test_same_input_same_score",
    "TestRandom::test_concurrent_calls_agree_with_sequential",
    "TestCwd::test_writes_only_under_run_dir",
    "TestNegative::test_memory_stats_are_finite_gib",
    "TestPromptTrainer::test_episode_yields_well_formed_trajectories",
    "TestPromptTrainer::test_concurrent_episodes",
    "TestLeaky::test_trainer_ranks_get_their_env_and_wait_returns",
    "TestLeaky::test_leaving_the_context_stops_servers_and_ranks",
}


def test_suites_fail_broken_components(tmp_path):
    (tmp_path / "test_broken_plugins.py").write_text(BROKEN_PLUGINS)
    result = subprocess.run([PYTHON, "-m", "pytest", "-q", "-rf", "--tb=no", "-p", "no:cacheprovider", "-p", "no:randomly",
                             str(tmp_path / "test_broken_plugins.py")], capture_output=True, text=True,
                            cwd=tmp_path, env=subprocess_env(), timeout=300)
    failed = {line.split("::", 1)[1].split(" ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED")}
    assert EXPECTED_FAILURES <= failed, f"not caught: {EXPECTED_FAILURES - failed}\n{result.stdout[-3000:]}"
    assert "test_record_has_one_line_summary" not in " ".join(failed), result.stdout[-3000:]  # the rest still passes


class SinkOnly:
    """A plugin under a reward suite that registered no reward (hook misnamed, forgotten, or returning [])."""

    @hookimpl
    def areal_register_metric_sinks(self):
        return [Component("sink", "m:Sink", None, "a sink")]

    @hookimpl
    def areal_register_rewards(self):
        return [Component("other", "m:Reward", None, "another reward")]


def test_a_plugin_that_registered_nothing_is_told_to_check_its_hook_not_to_install():
    class TestNoReward(RewardContract):
        plugin, component_name = SinkOnly(), "exact"

    suite = TestNoReward()
    registry = build_registry(extra_plugins=[(SinkOnly(), suite._label())], entry_points=False)
    with pytest.raises(pytest.fail.Exception, match=r"registers the rewards other, not 'exact': check `component_name`"):
        suite._check_plugin_registered(registry)

    class TestNoSink(MetricSinkContract):
        plugin, component_name = object(), "sink"

    suite = TestNoSink()
    with pytest.raises(pytest.fail.Exception) as info:
        suite._check_plugin_registered(build_registry(extra_plugins=[(suite.plugin, suite._label())], entry_points=False))
    assert str(info.value) == (
        "TestNoSink: plugin object (under test) registered no metric sink: check that it defines "
        "`@hookimpl def areal_register_metric_sinks()` (that exact name, decorated with `hookimpl` from "
        "areal_core.plugin) returning a list of Component records")
    assert "install" not in str(info.value)
