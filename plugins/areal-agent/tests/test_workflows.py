"""The three workflows on the embedded server (tests/conftest.py), built through the registry as
``areal train`` builds them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

import areal_agent.plugin
from areal_agent.sandbox import PythonSandbox
from areal_agent.tools import calculate, call_tool
from areal_core.registry import build_registry
from areal_core.rollout.reward_runner import RewardRunner
from conftest import FINAL

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def registry():
    return build_registry(extra_plugins=[(areal_agent.plugin, "areal-agent (under test)")], entry_points=False)


def make(registry, name, reward, tokenizer, **config):
    cfg = registry.get("workflow", name).load_config_model().model_validate({"name": name, **config})
    return registry.create("workflow", name, cfg, reward=reward, tokenizer=tokenizer)


def contains_answer(prompt, completion, sample):
    return 1.0 if str(sample["answer"]) in completion else 0.0


SAMPLE = {"id": "q1", "prompt": "what is two plus three", "answer": 5}
AGENT_CFG = {"chat_template": "hermes", "temperature": 0.0, "max_new_tokens": 64, "n_samples": 2}


def test_agent_in_process_exports_one_conversation_per_run(registry, engine, tokenizer):
    wf = make(registry, "agent", None, tokenizer, agent="sample_agents:calculator_agent", gamma=0.5, **AGENT_CFG)
    group = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert len(group) == 2 and len({t.group_id for t in group}) == 1 and group[0].sample_id == "q1"
    for t in group:
        assert t.info["n_calls"] == 2 and t.info["finish_reasons"] == ["tool_calls", "stop"]
        assert t.reward == pytest.approx(0.5)  # 1.0 on the final call, discounted once
        assert tokenizer.decode([i for i, m in zip(t.input_ids, t.loss_mask) if m], skip_special_tokens=True).endswith(FINAL)
    assert len(wf.proxy.store) == 0 and wf.stats()["agent_errors"] == 0


def test_agent_as_a_subprocess(registry, engine, tokenizer, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    wf = make(registry, "agent", None, tokenizer, agent="sample_agents:calculator_agent", mode="subprocess",
              export="individual", **AGENT_CFG)
    group = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert len(group) == 4 and sorted(t.reward for t in group) == [1.0, 1.0, 1.0, 1.0]  # gamma 1


def test_black_box_command_rewards_by_http(registry, engine, tokenizer, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    wf = make(registry, "agent", None, tokenizer, command=[sys.executable, os.path.join(TESTS, "sample_agents.py")],
              **dict(AGENT_CFG, n_samples=1))
    (traj,) = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert traj.reward == 0.25


def test_failing_agents_fail_the_episode_or_score_zero(registry, engine, tokenizer):
    from areal_agent.workflows.agent import AgentFailedError

    wf = make(registry, "agent", None, tokenizer, agent="sample_agents:raising_agent", **AGENT_CFG)
    with pytest.raises(AgentFailedError, match="the agent broke"):
        asyncio.run(wf.run_episode(engine, SAMPLE))
    assert len(wf.proxy.store) == 0 and wf.stats()["agent_errors"] == 2

    wf = make(registry, "agent", None, tokenizer, agent="sample_agents:raising_agent", on_agent_error="zero", **AGENT_CFG)
    group = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert [t.reward for t in group] == [0.0, 0.0], list(wf.recent_errors)
    assert "the agent broke" in group[0].info["agent_error"]

    wf = make(registry, "agent", None, tokenizer, agent="sample_agents:hanging_agent", timeout_s=0.5, **AGENT_CFG)
    with pytest.raises(AgentFailedError, match="timeout_s=0.5"):
        asyncio.run(wf.run_episode(engine, SAMPLE))
    assert len(wf.proxy.store) == 0


def test_bad_agent_config_names_the_field(registry, tokenizer):
    from areal_core.errors import ArealError

    with pytest.raises(ArealError, match="workflow.agent"):
        make(registry, "agent", None, tokenizer, agent="sample_agents:nope")
    with pytest.raises(Exception, match="exactly one of agent"):
        make(registry, "agent", None, tokenizer)


class SecondTimeLucky:
    """Reward 0 for the first answer of each conversation, 1 afterwards."""

    def __init__(self):
        self.seen = 0

    def __call__(self, prompt, completion, sample):
        self.seen += 1
        return 0.0 if self.seen == 1 else 1.0


def test_multi_turn_feedback_and_discount(registry, engine, tokenizer):
    wf = make(registry, "multi_turn", RewardRunner(SecondTimeLucky()), tokenizer, chat_template="hermes",
              temperature=0.0, max_new_tokens=64, n_samples=1, max_turns=3, gamma=0.9)
    (traj,) = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert traj.info["turns"] == 2 and traj.info["n_calls"] == 2
    assert traj.reward == pytest.approx(0.9) and traj.info["turn_returns"] == pytest.approx([0.9, 1.0])
    text = tokenizer.decode(traj.input_ids)
    assert text.count("Your answer is wrong. Please try again.") == 1
    feedback = tokenizer.decode([i for i, m in zip(traj.input_ids, traj.loss_mask) if not m])
    assert "Your answer is wrong" in feedback  # the feedback turn is never trained on


def test_tool_use_continues_after_a_failed_tool_call(registry, engine, tokenizer):
    # the model only knows an "add" tool, which tool_use does not offer: each such call fails, and
    # the model is called again with the error as the tool's answer
    wf = make(registry, "tool_use", RewardRunner(contains_answer), tokenizer, temperature=0.0, max_new_tokens=64,
              n_samples=1, tools=["calculator"], max_tool_rounds=2)
    (traj,) = asyncio.run(wf.run_episode(engine, SAMPLE))
    assert traj.info["tool_calls"] == traj.info["tool_failures"] >= 1 and traj.info["n_calls"] == 2
    assert "error: unknown tool 'add'" in tokenizer.decode(traj.input_ids)
    assert traj.reward == (1.0 if traj.info["answered"] else 0.0)


def test_tools():
    assert calculate("(12 + 7) * 3") == 57 and calculate("7 / 2") == 3.5 and calculate("-2 ** 2") == -4
    for bad in ("__import__('os')", "9 ** 9 ** 9", "1 / 0", "2 +"):
        with pytest.raises(ValueError):
            calculate(bad)
    sandbox = PythonSandbox(wall_time_s=1.0)
    assert asyncio.run(call_tool("python", {"code": "print(6 * 7)"}, sandbox)) == (True, "42\n")
    ok, out = asyncio.run(call_tool("python", {"code": "while True: pass"}, sandbox))
    assert not ok and out.startswith("error: timeout")
    assert asyncio.run(call_tool("calculator", {}, sandbox)) == (False, "error: calculator needs the argument 'expression'")
