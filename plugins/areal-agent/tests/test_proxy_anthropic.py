"""The real ``anthropic`` SDK against the proxy's ``/v1/messages`` (embedded server, tests/conftest.py)."""

from __future__ import annotations

import anthropic
import pytest
from anthropic import AsyncAnthropic

from areal_agent.api_messages import chat_messages
from areal_core.plugin import ArealError
from conftest import ADD_TOOL, FINAL
from sample_agents import TIMEOUT
from test_proxy_openai import with_proxy

ADD = {"name": "add", "description": ADD_TOOL["function"]["description"], "input_schema": ADD_TOOL["function"]["parameters"]}


def client(proxy, session) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key=session.api_key, max_retries=0, timeout=TIMEOUT)


def test_tool_use_round_trip(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        messages = [{"role": "user", "content": "add two and three"}]
        first = await c.messages.create(model="areal-tiny", max_tokens=64, system="you are a math agent",
                                        messages=messages, tools=[ADD])
        (use,) = [b for b in first.content if b.type == "tool_use"]
        messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "5"}]}]
        second = await c.messages.create(model="areal-tiny", max_tokens=64, system="you are a math agent",
                                         messages=messages, tools=[ADD])
        return first, second, session

    first, second, session = with_proxy(engine, tokenizer, scenario)
    assert first.stop_reason == "tool_use" and first.model == "areal-tiny"
    (use,) = first.content
    assert use.type == "tool_use" and use.name == "add" and use.input == {"a": 2, "b": 3}
    assert second.stop_reason == "end_turn" and [b.text for b in second.content] == [FINAL]
    a, b = session.calls
    assert b.parent == a.call_id and b.prompt_ids[:len(a.full_ids)] == a.full_ids  # spliced, token exact
    assert second.usage.input_tokens == len(b.prompt_ids) and second.usage.output_tokens == len(b.completion_ids)
    assert b.messages[0] == {"role": "system", "content": "you are a math agent"}
    assert b.messages[-1] == {"role": "tool", "tool_call_id": use.id, "content": "5"}


def test_streaming_events(engine, tokenizer):
    """``messages.stream``: text deltas as they are generated (rounds of 2 tokens), a tool_use block
    with its input, and the final message the SDK assembles from the events."""
    async def scenario(proxy, session):
        c = client(proxy, session)
        call = [{"role": "user", "content": "add"}]
        async with c.messages.stream(model="m", max_tokens=64, messages=call, tools=[ADD]) as s:
            tool_msg = await s.get_final_message()
        answer = call + [{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2, "b": 3}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "5"}]}]}]
        async with c.messages.stream(model="m", max_tokens=64, messages=answer, tools=[ADD]) as s:
            deltas = [t async for t in s.text_stream]
            text_msg = await s.get_final_message()
        return tool_msg, deltas, text_msg

    tool_msg, deltas, text_msg = with_proxy(engine, tokenizer, scenario, chunk=2)
    assert tool_msg.stop_reason == "tool_use" and [(b.type, b.name, b.input) for b in tool_msg.content] == [("tool_use", "add", {"a": 2, "b": 3})]
    assert "".join(deltas) == FINAL and len(deltas) >= 3
    assert text_msg.stop_reason == "end_turn" and [b.text for b in text_msg.content] == [FINAL]


def test_stop_reasons(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        answer = [{"role": "user", "content": "add"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2, "b": 3}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "5"}]}]
        cut = await c.messages.create(model="m", max_tokens=2, messages=answer, tools=[ADD])
        stopped = await c.messages.create(model="m", max_tokens=64, messages=answer, tools=[ADD],
                                          stop_sequences=["answer"])
        hidden = await c.messages.create(model="m", max_tokens=64, messages=answer[:1], tools=[ADD],
                                         tool_choice={"type": "none"})
        forced = [await c.messages.create(model="m", max_tokens=64, messages=answer, tools=[ADD], tool_choice=choice)
                  for choice in ({"type": "any"}, {"type": "tool", "name": "add"})]
        with pytest.raises(anthropic.BadRequestError, match="no tool named 'sub'"):
            await c.messages.create(model="m", max_tokens=4, messages=answer, tools=[ADD],
                                    tool_choice={"type": "tool", "name": "sub"})
        return cut, stopped, hidden, forced, session

    cut, stopped, hidden, forced, session = with_proxy(engine, tokenizer, scenario)
    for msg in forced:  # after the tool result the model answers in text unless a call is forced
        assert msg.stop_reason == "tool_use" and [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "add", {"a": 2, "b": 3})]
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "answer"
    assert [b.text for b in stopped.content] == ["The"]  # cut before the stop sequence; tool answers are stripped
    assert session.calls[2].tools is None  # tool_choice none: the model is shown no tools


def test_wrong_key_and_bad_blocks(engine, tokenizer):
    async def scenario(proxy, session):
        bad = AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key="sk-wrong", max_retries=0, timeout=TIMEOUT)
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "x"}])
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
        with pytest.raises(anthropic.BadRequestError, match=r"messages\[0\]\.content\[1\]\.type: 'image'"):
            await client(proxy, session).messages.create(
                model="m", max_tokens=4, messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, image]}])
        with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
            await client(proxy, session).messages.create(model="m", max_tokens=0, messages=[{"role": "user", "content": "x"}])
        return session

    session = with_proxy(engine, tokenizer, scenario)
    assert session.calls == []


def test_content_blocks_to_chat_messages():
    got = chat_messages([{"type": "text", "text": "be brief"}], [
        {"role": "user", "content": [{"type": "text", "text": "add "}, {"type": "text", "text": "2 and 3"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "ok"},
                                          {"type": "tool_use", "id": "t", "name": "add", "input": {"a": 2}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "no b", "is_error": True},
                                     {"type": "text", "text": "try again"}]},
    ])
    assert got == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "add 2 and 3"},
        {"role": "assistant", "content": "ok", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "add", "arguments": {"a": 2}}}]},
        {"role": "tool", "tool_call_id": "t", "content": "error: no b"},
        {"role": "user", "content": "try again"},
    ]
    with pytest.raises(ArealError, match=r"messages\[0\]\.role: 'system'"):
        chat_messages(None, [{"role": "system", "content": "x"}])
