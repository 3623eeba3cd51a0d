"""The real ``openai`` SDK against the proxy, generating with the embedded server (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from areal_agent.chat import ChatModel
from areal_agent.proxy import AgentProxy
from areal_agent.session import SessionStore
from areal_core.api.types import SamplingParams
from conftest import ADD_TOOL, FINAL
from sample_agents import TIMEOUT

GREEDY = SamplingParams(max_new_tokens=64, temperature=0.0)


def with_proxy(engine, tokenizer, fn, **kw):
    """Run ``fn(proxy, session)`` against a proxy serving in this event loop."""
    async def main():
        chat = ChatModel(tokenizer, "hermes", stream_chunk_tokens=kw.pop("chunk", 8))
        proxy = AgentProxy(chat, SessionStore(**kw.pop("store", {})), GREEDY, **kw)
        await proxy.start(engine)
        try:
            return await fn(proxy, proxy.store.open())
        finally:
            await proxy.stop()

    return asyncio.run(main())


def client(proxy, session) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=proxy.base_url, api_key=session.api_key, max_retries=0, timeout=TIMEOUT)


def test_plain_chat_records_the_call(engine, tokenizer):
    async def scenario(proxy, session):
        resp = await client(proxy, session).chat.completions.create(
            model="areal", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
        return resp, session

    resp, session = with_proxy(engine, tokenizer, scenario)
    (call,) = session.calls
    assert resp.id == call.call_id and resp.choices[0].finish_reason in ("stop", "length")
    assert resp.choices[0].message.content == tokenizer.decode(call.completion_ids, skip_special_tokens=True)
    assert resp.usage.completion_tokens == len(call.completion_ids) <= 8
    assert len(call.logprobs) == len(call.versions) == len(call.completion_ids)
    assert all(lp <= 0 for lp in call.logprobs) and set(call.versions) == {0}
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                             tokenize=False, chat_template=ChatModel(tokenizer, "hermes").template)
    assert call.prompt_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_tool_call_round_trip(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        messages = [{"role": "system", "content": "you are a math agent"}, {"role": "user", "content": "add two and three"}]
        first = await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL], temperature=0)
        tc = first.choices[0].message.tool_calls[0]
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tc.id, "content": "5"}]
        second = await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL], temperature=0)
        return first, second, session

    first, second, session = with_proxy(engine, tokenizer, scenario)
    assert first.choices[0].finish_reason == "tool_calls"
    tc = first.choices[0].message.tool_calls[0]
    assert tc.function.name == "add" and json.loads(tc.function.arguments) == {"a": 2, "b": 3}
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == FINAL
    a, b = session.calls
    assert b.parent == a.call_id and b.prompt_ids[:len(a.full_ids)] == a.full_ids  # spliced, token exact


def test_tool_choice_forces_a_call(engine, tokenizer):
    """After a tool result the model answers in text ("auto"); "required" and a named tool make it call
    again: the call's start is prompt (never trained on), the model writes the rest."""
    from areal_agent.toolcalls import forced_call_prefix

    named = {"type": "function", "function": {"name": "add"}}

    async def scenario(proxy, session):
        c = client(proxy, session)
        messages = [{"role": "user", "content": "add two and three"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "5"}]
        answers = {choice: await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL],
                                                           temperature=0, tool_choice=choice)
                   for choice in ("auto", "required")}
        answers["named"] = await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL],
                                                           temperature=0, tool_choice=named)
        chunks = [chunk async for chunk in await c.chat.completions.create(
            model="areal", messages=messages, tools=[ADD_TOOL], temperature=0, tool_choice="required", stream=True)]
        for bad in ({"type": "function", "function": {"name": "mul"}}, "always"):
            with pytest.raises(openai.BadRequestError, match="tool_choice"):
                await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL], tool_choice=bad)
        with pytest.raises(openai.BadRequestError, match="no tools"):
            await c.chat.completions.create(model="areal", messages=messages, tool_choice="required")
        return answers, chunks, session

    answers, chunks, session = with_proxy(engine, tokenizer, scenario)
    assert answers["auto"].choices[0].finish_reason == "stop" and answers["auto"].choices[0].message.content == FINAL
    for key in ("required", "named"):
        choice = answers[key].choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content, key
        (tc,) = choice.message.tool_calls
        assert tc.function.name == "add" and json.loads(tc.function.arguments) == {"a": 2, "b": 3}, key
    streamed = [d.tool_calls[0].function for ch in chunks for d in [ch.choices[0].delta] if ch.choices and d.tool_calls]
    assert [f.name for f in streamed] == ["add"] and not "".join(ch.choices[0].delta.content or "" for ch in chunks
                                                                  if ch.choices)
    auto, required, named_call, stream_call = session.calls
    for call, name in ((required, None), (named_call, "add"), (stream_call, None)):
        forced = tokenizer(forced_call_prefix(name), add_special_tokens=False)["input_ids"]
        assert call.prompt_ids == auto.prompt_ids + forced and len(call.logprobs) == len(call.completion_ids)


def test_streaming_matches_the_plain_answer(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        kw = {"model": "areal", "messages": [{"role": "user", "content": "add"}], "tools": [ADD_TOOL], "temperature": 0}
        plain = await c.chat.completions.create(**kw)
        chunks = [ch async for ch in await c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)]
        return plain, chunks

    plain, chunks = with_proxy(engine, tokenizer, scenario)
    calls = [tc for ch in chunks for choice in ch.choices for tc in (choice.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["add"]
    assert json.loads(calls[0].function.arguments) == json.loads(plain.choices[0].message.tool_calls[0].function.arguments)
    assert [choice.finish_reason for ch in chunks for choice in ch.choices if choice.finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert not [choice.delta.content for ch in chunks for choice in ch.choices if choice.delta.content]  # no tag text


def test_streaming_sends_text_as_it_is_generated(engine, tokenizer):
    """Rounds of 2 tokens: the final answer arrives in several deltas, and the recorded call is the
    same token sequence as an unstreamed one."""
    async def scenario(proxy, session):
        c = client(proxy, session)
        messages = [{"role": "user", "content": "add"},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                          "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "5"}]
        plain = await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL], temperature=0)
        stream = await c.chat.completions.create(model="areal", messages=messages, tools=[ADD_TOOL], temperature=0, stream=True)
        deltas = [choice.delta.content async for ch in stream for choice in ch.choices if choice.delta.content]
        return plain, deltas, session

    plain, deltas, session = with_proxy(engine, tokenizer, scenario, chunk=2)
    assert plain.choices[0].message.content == FINAL == "".join(deltas)
    assert len(deltas) >= 3
    a, b = session.calls
    assert a.completion_ids == b.completion_ids and a.prompt_ids == b.prompt_ids and len(b.logprobs) == len(b.completion_ids)


def test_n_samples_and_models(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        models = await c.models.list()
        resp = await c.chat.completions.create(model="areal", messages=[{"role": "user", "content": "hi"}], n=3,
                                               max_completion_tokens=5, temperature=1.0, seed=1)
        return models, resp, session

    models, resp, session = with_proxy(engine, tokenizer, scenario, model_name="tiny")
    assert [m.id for m in models.data] == ["tiny"]
    assert len(resp.choices) == 3 and len(session.calls) == 3
    assert all(len(c.completion_ids) <= 5 for c in session.calls)


def test_wrong_key_is_401_and_sessions_are_isolated(engine, tokenizer):
    async def scenario(proxy, session):
        other = proxy.store.open()
        await client(proxy, other).chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        bad = AsyncOpenAI(base_url=proxy.base_url, api_key="sk-wrong", max_retries=0, timeout=TIMEOUT)
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        async with httpx.AsyncClient() as http:  # a session key is no admin key
            r = await http.get(proxy.base_url.removesuffix("/v1") + "/admin/sessions",
                               headers={"Authorization": f"Bearer {session.api_key}"})
            assert r.status_code == 401
        proxy.store.close(other)  # an ended session's key stops working
        with pytest.raises(openai.AuthenticationError):
            await client(proxy, other).chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}])
        return session, other

    session, other = with_proxy(engine, tokenizer, scenario)
    assert session.calls == [] and len(other.calls) == 1


def test_bad_requests_name_the_field(engine, tokenizer):
    async def scenario(proxy, session):
        url = proxy.base_url + "/chat/completions"
        h = {"Authorization": f"Bearer {session.api_key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient() as http:
            malformed = await http.post(url, content=b"{not json", headers=h)
            unknown = await http.post(url, json={"messages": [{"role": "user", "content": "x"}], "bogus": 1}, headers=h)
            bad_role = await http.post(url, json={"messages": [{"role": "wizard", "content": "x"}]}, headers=h)
            huge = await http.post(url, json={"messages": [{"role": "user", "content": "x" * 5000}]}, headers=h)
        return malformed, unknown, bad_role, huge

    malformed, unknown, bad_role, huge = with_proxy(engine, tokenizer, scenario, max_body_bytes=4096)
    assert malformed.status_code == 400 and "json" in malformed.json()["error"]["message"].lower()
    assert unknown.status_code == 400 and "bogus" in unknown.json()["error"]["message"]
    assert bad_role.status_code == 400 and "messages[0].role" in bad_role.json()["error"]["message"]
    assert huge.status_code == 413


def test_reward_endpoint_and_admin_export(engine, tokenizer):
    async def scenario(proxy, session):
        admin = {"Authorization": f"Bearer {proxy.admin_key}"}
        root = proxy.base_url.removesuffix("/v1")
        async with httpx.AsyncClient() as http:
            opened = (await http.post(root + "/admin/sessions", headers=admin)).json()
            c = AsyncOpenAI(base_url=proxy.base_url, api_key=opened["api_key"], max_retries=0, timeout=TIMEOUT)
            resp = await c.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], max_tokens=3)
            r = await http.post(proxy.base_url + "/rewards", json={"reward": 0.5, "call_id": resp.id},
                                headers={"Authorization": f"Bearer {opened['api_key']}"})
            assert r.status_code == 200
            listed = (await http.get(root + "/admin/sessions", headers=admin)).json()
            ended = (await http.post(root + f"/admin/sessions/{opened['session_id']}/end", headers=admin)).json()
        return opened, listed, ended

    opened, listed, ended = with_proxy(engine, tokenizer, scenario)
    assert {"session_id": opened["session_id"], "n_calls": 1} in [{k: s[k] for k in ("session_id", "n_calls")} for s in listed]
    (traj,) = ended["trajectories"]
    assert traj["reward"] == 0.5 and sum(traj["loss_mask"]) == len([v for v in traj["versions"] if v >= 0])


def test_responses_stream_text_deltas_and_function_calls(engine, tokenizer):
    async def scenario(proxy, session):
        c = client(proxy, session)
        tool = {"type": "function", "name": "add", "parameters": ADD_TOOL["function"]["parameters"]}
        call_events = [e async for e in await c.responses.create(model="m", input="add", tools=[tool], stream=True)]
        answer = [{"role": "user", "content": "add"},
                  {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"a": 2, "b": 3}'},
                  {"type": "function_call_output", "call_id": "c1", "output": "5"}]
        text_events = [e async for e in await c.responses.create(model="m", input=answer, tools=[tool], stream=True)]
        return call_events, text_events

    call_events, text_events = with_proxy(engine, tokenizer, scenario, chunk=2)
    (done,) = [e for e in call_events if e.type == "response.completed"]
    (fc,) = done.response.output
    assert fc.type == "function_call" and fc.name == "add" and json.loads(fc.arguments) == {"a": 2, "b": 3}
    deltas = [e.delta for e in text_events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == FINAL and len(deltas) >= 3
    assert [e.type for e in text_events][:2] == ["response.created", "response.in_progress"]
    assert text_events[-1].type == "response.completed" and text_events[-1].response.output_text == FINAL
    assert [e.sequence_number for e in text_events] == list(range(len(text_events)))
