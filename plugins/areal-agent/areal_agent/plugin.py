"""Registers the agent workflows with areal (entry point ``areal`` -> this module). Import-light:
factories and configs are named as ``"module:attr"`` strings."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_workflows():
    return [
        Component("agent", "areal_agent.workflows.agent:AgentWorkflow", "areal_agent.workflows.agent:AgentWorkflowConfig",
                  "train an existing agent through an OpenAI-compatible proxy (change its base_url)"),
        Component("multi_turn", "areal_agent.workflows.multi_turn:MultiTurnWorkflow",
                  "areal_agent.workflows.multi_turn:MultiTurnConfig",
                  "answer, get feedback, retry up to K turns; turn-discounted reward"),
        Component("tool_use", "areal_agent.workflows.tool_use:ToolUseWorkflow", "areal_agent.workflows.tool_use:ToolUseConfig",
                  "tool-integrated reasoning: calculator + sandboxed Python executor"),
    ]
