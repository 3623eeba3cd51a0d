"""A temporary plugin providing one small component of every kind, for the core's own tests.

Registered by fixtures (``build_registry(extra_plugins=[(ToyPlugin, ...)], entry_points=False)``),
never installed: the tests do not depend on which plugins happen to be installed.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, Field

from areal_core import hookimpl
from areal_core.api.types import Trajectory
from areal_core.config.base import ComponentConfig
from areal_core.registry import Component

HERE = "toyplugin"


class OptimizerConfig(BaseModel):
    model_config = {"extra": "forbid"}
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")


class ToyEngineConfig(ComponentConfig):
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="optimizer settings")
    max_tokens_per_mb: int = Field(1024, ge=1, description="micro-batch token budget")
    tag: str = Field("", description="free text, kept as written on the command line")


class ToyBackendConfig(ComponentConfig):
    n_servers: int = Field(1, ge=1, description="servers to start")
    extra_args: list[str] = Field(default_factory=list, description="appended to the server command")


class ToyAlgoConfig(ComponentConfig):
    eps_clip: float = Field(0.2, gt=0, description="PPO clip range")
    mode: Literal["token", "sequence"] = Field("token", description="importance ratio level")


class ToyRewardConfig(ComponentConfig):
    target: str = Field("42", description="completion text that scores 1")


class ToyWorkflowConfig(ComponentConfig):
    n_samples: int = Field(2, ge=1, description="completions per prompt")


class ToyBackend:
    """Its server is a Python one-liner printing its arguments (enough for `areal serve`)."""

    def __init__(self, config: ToyBackendConfig):
        self.config = config

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        return [sys.executable, "-c", "import sys; print('toy server', *sys.argv[1:])", model_path, host, str(port), *self.config.extra_args]


class ToyReward:
    def __init__(self, config: ToyRewardConfig):
        self.target = config.target

    def __call__(self, prompt: str, completion: str, sample: dict) -> float:
        return 1.0 if completion.strip() == self.target else 0.0


class ToyWorkflow:
    """Generates ``n_samples`` completions of the sample's prompt and scores each."""

    def __init__(self, config: ToyWorkflowConfig, reward, tokenizer):
        self.n, self.reward, self.tokenizer = config.n_samples, reward, tokenizer

    async def run_episode(self, engine, sample):
        from areal_core.api.types import ModelRequest, SamplingParams

        prompt_ids = self.tokenizer.encode(sample["prompt"])
        trajectories = []
        for i in range(self.n):
            resp = await engine.agenerate(ModelRequest(list(prompt_ids), SamplingParams(max_new_tokens=8), rid=f"{sample['id']}-{i}"))
            completion = self.tokenizer.decode(resp.output_ids)
            reward = (await self.reward(sample["prompt"], completion, sample)).value  # core's RewardRunner
            trajectories.append(Trajectory.from_response(resp, reward, group_id=str(sample["id"]), sample_id=str(sample["id"])))
        return trajectories


class ToyPlugin:
    @hookimpl
    def areal_register_train_engines(self):
        return [Component("toy_engine", f"{HERE}:ToyBackend", f"{HERE}:ToyEngineConfig", "toy train engine")]

    @hookimpl
    def areal_register_inference_backends(self):
        return [Component("toy_backend", f"{HERE}:ToyBackend", f"{HERE}:ToyBackendConfig", "prints its arguments")]

    @hookimpl
    def areal_register_algorithms(self):
        return [Component("toy_algo", f"{HERE}:ToyAlgoConfig", f"{HERE}:ToyAlgoConfig", "toy algorithm")]

    @hookimpl
    def areal_register_rewards(self):
        return [Component("toy_reward", f"{HERE}:ToyReward", f"{HERE}:ToyRewardConfig", "1 when the completion is the target")]

    @hookimpl
    def areal_register_workflows(self):
        return [Component("toy_workflow", f"{HERE}:ToyWorkflow", f"{HERE}:ToyWorkflowConfig", "n samples, scored")]

    @hookimpl
    def areal_register_schedulers(self):
        return [Component("toy_sched", f"{HERE}:ToyBackend", None, "toy scheduler")]


MINIMAL_RUN = {
    "model_path": "/models/tiny",
    "actor": {"name": "toy_engine"},
    "algorithm": {"name": "toy_algo"},
    "inference": {"name": "toy_backend"},
    "workflow": {"name": "toy_workflow"},
    "reward": {"name": "toy_reward"},
    "scheduler": {"name": "toy_sched"},
    "train_dataset": {"path": "data/train.jsonl"},
}


PLUGIN = ToyPlugin()  # what an entry point ``toy = toyplugin:PLUGIN`` loads
