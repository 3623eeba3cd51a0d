"""The OpenAI Agents SDK (``openai-agents``), unmodified but for its client's base_url and key,
runs a tool-using agent through the proxy's Responses API (the SDK's default model API)."""

from __future__ import annotations

import asyncio

from agents import (
    Agent,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from areal_agent.chat import ChatModel
from areal_agent.export import export_calls
from areal_agent.proxy import AgentProxy
from areal_agent.session import SessionStore
from areal_core.api.types import SamplingParams
from conftest import FINAL
from sample_agents import TIMEOUT


def test_agents_sdk_runs_a_tool_through_the_proxy(engine, tokenizer):
    seen = []

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        seen.append((a, b))
        return a + b

    async def main():
        proxy = AgentProxy(ChatModel(tokenizer, "hermes"), SessionStore(), SamplingParams(max_new_tokens=64))
        await proxy.start(engine)
        session = proxy.store.open()
        try:
            set_tracing_disabled(True)  # traces would go to api.openai.com
            set_default_openai_client(AsyncOpenAI(base_url=proxy.base_url, api_key=session.api_key, max_retries=0, timeout=TIMEOUT),
                                      use_for_tracing=False)
            agent = Agent(name="calc", instructions="You add numbers with the add tool.", tools=[add],
                          model="areal", model_settings=ModelSettings(temperature=0.0))
            result = await Runner.run(agent, "what is two plus three?", max_turns=4)
            return result, session
        finally:
            await proxy.stop()

    result, session = asyncio.run(main())
    assert seen == [(2, 3)]
    assert result.final_output == FINAL
    first, second = session.calls
    assert first.finish_reason == "tool_calls" and second.parent == first.call_id
    (traj,) = export_calls(session.calls, "concat")
    assert traj.input_ids == second.full_ids and sum(traj.loss_mask) == len(first.completion_ids) + len(second.completion_ids)
