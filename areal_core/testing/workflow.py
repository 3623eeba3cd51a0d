"""Contract suite for workflows: ``factory(config, reward, tokenizer)``, ``async run_episode(engine, sample)``.

Subclass :class:`WorkflowContract`, name the component and give ``samples`` (dataset rows the
workflow accepts)::

    class TestRLVR(WorkflowContract):
        plugin = areal_core.builtins
        component_name = "rlvr"
        component_config = {"n_samples": 3, "max_new_tokens": 16}
        samples = [{"id": "a", "prompt": "What is 2+2?"}, {"id": "b", "prompt": "Name a colour."}]

The engine is :class:`ScriptedEngine`, an ``InferenceEngine`` that answers from a script with
known per-token logprobs and weight version; the tokenizer is the tiny byte-level BPE of
:mod:`areal_core.testing.tiny`; the reward is :class:`RecordingReward`. Override the ``engine``,
``tokenizer`` or ``reward`` fixture to use others. The workflow receives the reward wrapped in a
:class:`~areal_core.rollout.reward_runner.RewardRunner`, as under ``areal train``.

Checked: an episode returns a non-empty list of Trajectory; each starts with untrained prompt
tokens (mask 0, version -1, logprob 0); every trained token is one the engine generated, with
the engine's logprob and version; rewards are values the reward returned; one episode is one
group (shared, non-empty ``group_id``), different samples are different groups; episodes run
concurrently on one event loop give valid results; a newer engine version is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any, ClassVar

import pytest

from areal_core.api.protocols import Workflow
from areal_core.api.types import ModelRequest, ModelResponse, Trajectory
from areal_core.testing.contract import ComponentContract, run_async


class ScriptedEngine:
    """An InferenceEngine answering request k with ``completions[k % len]`` (tokenized, then cut at
    ``max_new_tokens``). Token i of a completion gets logprob ``-(i + 1) / 64``; every token gets
    ``version``. ``requests`` records what was asked."""

    def __init__(self, tokenizer, completions: list[str], version: int = 3):
        self.tokenizer, self.completions, self.version = tokenizer, completions, version
        self.requests: list[ModelRequest] = []
        self._counter = itertools.count()

    @staticmethod
    def logprob(i: int) -> float:
        return -(i + 1) / 64

    async def agenerate(self, req: ModelRequest) -> ModelResponse:
        self.requests.append(req)
        await asyncio.sleep(0)  # yield, as a real client does, so episodes interleave
        text = self.completions[next(self._counter) % len(self.completions)]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        out = ids[: req.sampling.max_new_tokens]
        return ModelResponse(
            input_ids=list(req.input_ids), output_ids=out, output_logprobs=[self.logprob(i) for i in range(len(out))],
            output_versions=[self.version] * len(out), finish_reason="stop" if len(out) == len(ids) else "length",
        )

    def get_version(self) -> int:
        return self.version


class RecordingReward:
    """A deterministic reward (``len(completion) % 5 / 4``) that records every call and value."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.values: set[float] = set()

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        value = len(completion) % 5 / 4
        self.calls.append((prompt, completion, sample))
        self.values.add(value)
        return value


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    from areal_core.testing.tiny import make_tokenizer

    return make_tokenizer()


class WorkflowContract(ComponentContract):
    kind = "workflow"
    protocol = Workflow
    samples: ClassVar[list[dict[str, Any]]] = []
    completions: ClassVar[list[str]] = ["The answer is 4.", "I think it is 5, or maybe 6.", "blue"]

    @pytest.fixture
    def tokenizer(self):
        return tiny_tokenizer()

    @pytest.fixture
    def reward(self):
        return RecordingReward()

    @pytest.fixture
    def engine(self, tokenizer):
        return ScriptedEngine(tokenizer, list(self.completions))

    @pytest.fixture
    def dependencies(self, reward, tokenizer) -> dict[str, Any]:
        from areal_core.rollout.reward_runner import RewardRunner

        # what `areal train` passes: the configured reward wrapped in a RewardRunner
        return {"reward": RewardRunner(reward), "tokenizer": tokenizer}

    def episode(self, workflow, engine, sample) -> list[Trajectory]:
        trajectories = run_async(workflow.run_episode(engine, sample))
        assert trajectories is not None, f"episode of {sample} was rejected (None); give samples the workflow accepts"
        assert isinstance(trajectories, list) and trajectories, f"episode of {sample} returned {trajectories!r}"
        assert all(isinstance(t, Trajectory) for t in trajectories)
        return trajectories

    def check_trajectory(self, t: Trajectory, engine: ScriptedEngine) -> None:
        generated = {tid for req_out in self._generated(engine) for tid in req_out}
        assert t.loss_mask[0] == 0, "the first token is prompt: it must not be trained on"
        first_trained = t.loss_mask.index(1) if 1 in t.loss_mask else None
        assert first_trained is not None, "no token has loss_mask 1: nothing would be trained"
        for i in range(first_trained):
            assert (t.versions[i], t.logprobs[i]) == (-1, 0.0), f"prompt token {i}: version {t.versions[i]}, logprob {t.logprobs[i]}"
        scripted = {ScriptedEngine.logprob(i) for i in range(4096)}
        for i, m in enumerate(t.loss_mask):
            if m:
                assert t.input_ids[i] in generated, f"trained token {i} ({t.input_ids[i]}) was not generated by the engine"
                assert t.versions[i] == engine.version, f"trained token {i}: version {t.versions[i]}, engine at {engine.version}"
                assert t.logprobs[i] in scripted, f"trained token {i}: logprob {t.logprobs[i]} is not the engine's"

    def _generated(self, engine: ScriptedEngine):
        for text in engine.completions:
            ids = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
            yield ids + ([engine.tokenizer.eos_token_id] if engine.tokenizer.eos_token_id is not None else [])

    def test_samples_are_given(self):
        assert self.samples, f"{type(self).__name__}: set `samples` to dataset rows the workflow accepts (two or more)"

    def test_episode_yields_well_formed_trajectories(self, component, engine):
        for sample in self.samples:
            for t in self.episode(component, engine, sample):
                self.check_trajectory(t, engine)
        assert engine.requests, "the workflow never called engine.agenerate"

    def test_rewards_come_from_the_reward(self, component, engine, reward):
        for sample in self.samples:
            for t in self.episode(component, engine, sample):
                assert t.reward in reward.values, f"trajectory reward {t.reward} was never returned by the reward"
        assert reward.calls, "the reward was never called"

    def test_one_episode_is_one_group(self, component, engine):
        groups = []
        for sample in self.samples:
            ids = {t.group_id for t in self.episode(component, engine, sample)}
            assert len(ids) == 1 and next(iter(ids)), f"one episode must share one non-empty group_id, got {ids}"
            groups.append(ids.pop())
        assert len(set(groups)) == len(groups), f"different samples got the same group_id: {groups}"

    def test_concurrent_episodes(self, component, engine):
        async def all_at_once():
            return await asyncio.gather(*(component.run_episode(engine, s) for s in self.samples * 2))

        for trajectories in run_async(all_at_once()):
            assert trajectories, "a concurrent episode returned nothing"
            for t in trajectories:
                self.check_trajectory(t, engine)

    def test_newer_engine_version_is_recorded(self, component, engine):
        engine.version = 11
        for t in self.episode(component, engine, self.samples[0]):
            assert {v for v, m in zip(t.versions, t.loss_mask) if m} == {11}
