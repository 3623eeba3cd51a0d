"""The three workflows pass areal's workflow contract suite (scripted engine, tiny tokenizer)."""

from __future__ import annotations

from typing import Any, ClassVar

import areal_agent.plugin
from areal_core.testing.workflow import WorkflowContract

SAMPLES = [{"id": "a", "prompt": "What is 2+2?"}, {"id": "b", "prompt": "Name a colour."}]


class TestAgentWorkflow(WorkflowContract):
    plugin = areal_agent.plugin
    component_name = "agent"
    component_config: ClassVar[dict[str, Any]] = {"agent": "sample_agents:plain_agent", "n_samples": 2, "max_new_tokens": 16}
    samples: ClassVar[list[dict[str, Any]]] = SAMPLES


class TestMultiTurnWorkflow(WorkflowContract):
    plugin = areal_agent.plugin
    component_name = "multi_turn"
    component_config: ClassVar[dict[str, Any]] = {"n_samples": 2, "max_new_tokens": 16, "max_turns": 2, "success_threshold": 0.0, "gamma": 1.0}
    samples: ClassVar[list[dict[str, Any]]] = SAMPLES


class TestToolUseWorkflow(WorkflowContract):
    plugin = areal_agent.plugin
    component_name = "tool_use"
    component_config: ClassVar[dict[str, Any]] = {"n_samples": 2, "max_new_tokens": 16, "gamma": 1.0}
    samples: ClassVar[list[dict[str, Any]]] = SAMPLES
