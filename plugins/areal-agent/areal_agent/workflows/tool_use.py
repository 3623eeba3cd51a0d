"""``tool_use``: tool-integrated reasoning with a calculator and a sandboxed Python executor.

One conversation per episode sample (``n_samples`` of them, one group)::

    messages = [system?, user: task], tools = the configured subset of {calculator, python}
    repeat up to max_tool_rounds:
        call = model(messages, tools)
        no tool call                -> final answer; stop
        each tool call              -> run it (areal_agent.tools; python in areal_agent.sandbox),
                                       append {role: tool, content: its output or "error: ..."}
    reward(task, final answer, sample) on the last call; discount gamma back over the calls

A failed tool call (timeout, memory, denied network or write, bad arguments, unknown tool) does
not stop the episode: the model reads the error and goes on; ``info.tool_failures`` counts them.
A conversation that never gives a final answer gets reward 0.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from areal_agent.chat import ChatRequest
from areal_agent.sandbox import PythonSandbox
from areal_agent.session import Session
from areal_agent.tools import TOOL_SPECS, call_tool
from areal_agent.workflows.common import ChatWorkflowConfig, ConversationWorkflow


class ToolUseConfig(ChatWorkflowConfig):
    """Options of the ``tool_use`` workflow."""

    tools: list[str] = Field(default_factory=lambda: ["calculator", "python"], description="tools offered: calculator, python")
    max_tool_rounds: int = Field(4, ge=1, description="most model calls per conversation")
    chat_template: str = Field("hermes", description="tokenizer | hermes | a Jinja template (must render tools)")
    sandbox_wall_time_s: float = Field(5.0, gt=0, description="wall time of one python tool call")
    sandbox_memory_mb: int = Field(512, ge=32, description="address-space limit (RLIMIT_AS) of one python tool call")

    @field_validator("tools")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(TOOL_SPECS))
        if unknown or not v:
            raise ValueError(f"unknown tools {unknown}; available: {sorted(TOOL_SPECS)}")
        return v


class ToolUseWorkflow(ConversationWorkflow):
    name = "tool_use"
    config: ToolUseConfig

    def __init__(self, config: ToolUseConfig, reward, tokenizer):
        super().__init__(config, reward, tokenizer)
        self.tools = [TOOL_SPECS[t] for t in config.tools]
        self.sandbox = PythonSandbox(wall_time_s=config.sandbox_wall_time_s, memory_mb=config.sandbox_memory_mb)

    async def converse(self, engine, session: Session, task: str, messages: list[dict], sample) -> dict:
        tool_calls = failures = 0
        for _ in range(self.config.max_tool_rounds):
            (call,) = await self.chat.complete(engine, session, ChatRequest(messages, self.tools, self.sampling))
            if not call.message.get("tool_calls"):
                call.reward = (await self.reward(task, call.message["content"], sample)).value
                return {"tool_calls": tool_calls, "tool_failures": failures, "answered": True}
            messages = messages + [call.message]
            for tc in call.message["tool_calls"]:
                ok, output = await call_tool(tc["function"]["name"], tc["function"]["arguments"], self.sandbox)
                tool_calls += 1
                failures += not ok
                messages.append({"role": "tool", "tool_call_id": tc["id"], "content": output})
        return {"tool_calls": tool_calls, "tool_failures": failures, "answered": False}
