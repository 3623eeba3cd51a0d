"""The built-in components pass their kinds' contract suites (areal_core.testing)."""

from __future__ import annotations

from pathlib import Path

import pytest

import areal_core.builtins
from areal_core.metrics import read_metrics
from areal_core.multimodal import encode_image
from areal_core.testing.device import DeviceContract
from areal_core.testing.metric_sink import MetricSinkContract
from areal_core.testing.reward import RewardCase, RewardContract
from areal_core.testing.scheduler import SchedulerContract
from areal_core.testing.tiny import make_tiny_model, random_picture
from areal_core.testing.workflow import WorkflowContract
from coretest_support import wandb_offline_record
from toyplugin import ToyPlugin


class TestJsonlSink(MetricSinkContract):
    plugin = areal_core.builtins
    component_name = "jsonl"

    def read_back(self, run_dir: Path):
        return {row["step"]: row for row in read_metrics(run_dir)}


class TestTensorboardSink(MetricSinkContract):
    plugin = areal_core.builtins
    component_name = "tensorboard"

    def read_back(self, run_dir: Path):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        stored: dict[int, dict[str, float]] = {}
        for tag in events.Tags()["scalars"]:
            for e in events.Scalars(tag):
                stored.setdefault(e.step, {})[tag] = e.value
        return stored


class TestWandbSink(MetricSinkContract):
    plugin = areal_core.builtins
    component_name = "wandb"
    component_config = {"mode": "offline", "project": "contract"}

    def test_offline_run_records_metrics(self, component, run_dir):
        """W&B offline runs are a binary log; the metric names and values are in it as text."""
        component.log(5, {"contract_metric_xyz": 0.125})
        component.close()
        data = wandb_offline_record(run_dir, b"contract_metric_xyz", b"0.125")
        assert b"contract_metric_xyz" in data and b"0.125" in data


class TestCPUDevice(DeviceContract):
    plugin = areal_core.builtins
    component_name = "cpu"


class TestCUDADevice(DeviceContract):
    """On a machine without a GPU this checks the unavailable path (a clear ArealError)."""

    plugin = areal_core.builtins
    component_name = "cuda"


class TestLocalScheduler(SchedulerContract):
    """Real subprocesses: health-only servers and rank scripts (see areal_core.testing.scheduler)."""

    plugin = areal_core.builtins
    component_name = "local"


class TestRLVRWorkflow(WorkflowContract):
    plugin = areal_core.builtins
    component_name = "rlvr"
    component_config = {"n_samples": 3, "max_new_tokens": 6}
    samples = [{"id": "q1", "prompt": "What is 2+2?"}, {"id": "q2", "messages": [{"role": "user", "content": "Name a colour."}]}]


class TestVisionRLVRWorkflow(WorkflowContract):
    """On the tiny Qwen2.5-VL's tokenizer and image processor, with real pictures."""

    plugin = areal_core.builtins
    component_name = "vision_rlvr"
    component_config = {"n_samples": 3, "max_new_tokens": 6}
    samples = [
        {"id": "p1", "prompt": "How many shapes?", "images": encode_image(random_picture(0))},
        {"id": "p2", "messages": [{"role": "user", "content": "Count them."}],
         "images": [encode_image(random_picture(1)), encode_image(random_picture(2, (60, 120)))]},
    ]

    @pytest.fixture(scope="class")
    def model_dir(self, tmp_path_factory):
        return make_tiny_model(tmp_path_factory.mktemp("vl"), arch="qwen2_5_vl")

    @pytest.fixture
    def tokenizer(self, model_dir):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)


class TestToyReward(RewardContract):
    """The suite itself, on the toy plugin's reward."""

    plugin = ToyPlugin()
    component_name = "toy_reward"
    component_config = {"target": "42"}
    cases = [RewardCase("6*7?", "42", {}, 1.0), RewardCase("6*7?", "41", {}, 0.0)]


class TestToyWorkflow(WorkflowContract):
    """The suite itself, on the toy plugin's workflow (a plain loop, not rlvr)."""

    plugin = ToyPlugin()
    component_name = "toy_workflow"
    samples = [{"id": 1, "prompt": "hello"}, {"id": 2, "prompt": "world"}]
