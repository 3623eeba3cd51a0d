"""Token / mask layouts and discounted rewards, built by hand for a 3-turn conversation with a tool call."""

from __future__ import annotations

import pytest

from areal_agent.chat import ChatModel
from areal_agent.export import discounted_returns, export_calls
from areal_agent.session import CallRecord, Session
from areal_agent.toolcalls import parse_tool_calls
from areal_core.testing.tiny import make_tokenizer
from conftest import ADD_TOOL, TOOL_CALL

CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}


@pytest.fixture(scope="module")
def chat():
    return ChatModel(make_tokenizer(), "hermes")


def answer(chat, session, messages, completion_text, reward=None):
    """Record a call whose completion is ``completion_text`` + eos, as the proxy would."""
    prompt, parent = chat.prompt_ids(session, messages, [ADD_TOOL])
    ids = chat.encode(completion_text) + [chat.eos_id]
    parsed = parse_tool_calls(completion_text)
    message = {"role": "assistant", "content": parsed.content}
    if parsed.tool_calls:
        message["tool_calls"] = [dict(CALL, id=parsed.tool_calls[0].id)]
    call = CallRecord(call_id=f"c{len(session.calls) + 1}", messages=messages, tools=[ADD_TOOL], prompt_ids=prompt,
                      completion_ids=ids, logprobs=[-0.5] * len(ids), versions=[len(session.calls)] * len(ids),
                      finish_reason="tool_calls" if parsed.tool_calls else "stop", message=message, parent=parent,
                      reward=reward)
    session.calls.append(call)
    return call


def test_three_turns_with_a_tool_call_concat_layout(chat):
    s = Session(id="s", api_key="k")
    m1 = [{"role": "system", "content": "math agent"}, {"role": "user", "content": "add 2 and 3"}]
    c1 = answer(chat, s, m1, TOOL_CALL)
    m2 = m1 + [dict(c1.message), {"role": "tool", "tool_call_id": "x", "content": "5"}]
    c2 = answer(chat, s, m2, "The answer is 5.", reward=0.5)
    m3 = m2 + [c2.message, {"role": "user", "content": "now double it"}]
    c3 = answer(chat, s, m3, "10", reward=1.0)

    enc = chat.encode
    eos = [chat.eos_id]
    p1 = enc("<|im_start|>system\nmath agent\n\n# Tools\n<tools>\n") + enc(
        '{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
        '{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}\n'
        '</tools>\nCall a tool with <tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nadd 2 and 3<|im_end|>\n<|im_start|>assistant\n")
    out1 = enc(TOOL_CALL) + eos
    tool_turn = enc("\n<|im_start|>tool\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    out2 = enc("The answer is 5.") + eos
    user_turn = enc("\n<|im_start|>user\nnow double it<|im_end|>\n<|im_start|>assistant\n")
    out3 = enc("10") + eos
    assert c1.prompt_ids == p1 and (c2.parent, c3.parent) == ("c1", "c2")

    (traj,) = export_calls(s.calls, "concat", gamma=0.9, group_id="g", sample_id="q")
    assert traj.input_ids == p1 + out1 + tool_turn + out2 + user_turn + out3
    assert traj.loss_mask == [0] * len(p1) + [1] * len(out1) + [0] * len(tool_turn) + [1] * len(out2) \
        + [0] * len(user_turn) + [1] * len(out3)
    assert traj.versions == [-1] * len(p1) + [0] * len(out1) + [-1] * len(tool_turn) + [1] * len(out2) \
        + [-1] * len(user_turn) + [2] * len(out3)
    assert traj.logprobs == [-0.5 if m else 0.0 for m in traj.loss_mask]
    # r = (unset, 0.5, 1.0), gamma 0.9: G3 = 1.0, G2 = 0.5 + 0.9 * 1.0 = 1.4, G1 = 0 + 0.9 * 1.4 = 1.26
    assert traj.reward == pytest.approx(1.26)
    assert traj.info["turn_returns"] == pytest.approx([1.26, 1.4, 1.0])
    assert traj.group_id == "g" and traj.sample_id == "q" and traj.info["call_ids"] == ["c1", "c2", "c3"]

    individual = export_calls(s.calls, "individual", gamma=0.9)
    assert [t.reward for t in individual] == pytest.approx([1.26, 1.4, 1.0])
    assert individual[1].input_ids == p1 + out1 + tool_turn + out2
    assert individual[1].loss_mask == [0] * (len(p1) + len(out1) + len(tool_turn)) + [1] * len(out2)


def test_a_turn_that_does_not_continue_starts_a_new_sequence(chat):
    s = Session(id="s", api_key="k")
    m1 = [{"role": "user", "content": "add 2 and 3"}]
    c1 = answer(chat, s, m1, TOOL_CALL, reward=1.0)
    # the client rewrote the answer: no exact prefix, so no splice
    m2 = m1 + [{"role": "assistant", "content": "something else"}, {"role": "user", "content": "again"}]
    c2 = answer(chat, s, m2, "10", reward=0.0)
    assert c2.parent is None
    a, b = export_calls(s.calls, "concat", gamma=0.5)
    assert a.input_ids == c1.full_ids and b.input_ids == c2.full_ids and (a.reward, b.reward) == (1.0, 0.0)


def test_discount():
    assert discounted_returns([None, None, 1.0], 0.5) == [0.25, 0.5, 1.0]
    assert discounted_returns([1.0, None, 2.0], 1.0) == [3.0, 2.0, 2.0]
    assert discounted_returns([], 0.9) == []


def test_tool_call_parsing():
    p = parse_tool_calls('ok <tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
                         '<tool_call>{"name": "mul", "arguments": "{\\"x\\": 2}"}</tool_call>')
    assert p.content == "ok" and [(c.name, c.arguments) for c in p.tool_calls] == [("add", {"a": 1}), ("mul", {"x": 2})]
    broken = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": </tool_call> tail')
    assert broken.tool_calls == [] and len(broken.errors) == 1 and "<tool_call>" in broken.content
    assert parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>').errors


def test_brief_template_lists_tools_by_name_and_splices_the_same_way():
    chat = ChatModel(make_tokenizer(), "hermes_brief")
    s = Session(id="s", api_key="k")
    m1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 2 and 3"}]
    assert chat.render(m1, [ADD_TOOL], True) == ("<|im_start|>system\nbe brief\ntools: add(a, b)<|im_end|>\n"
                                                 "<|im_start|>user\nadd 2 and 3<|im_end|>\n<|im_start|>assistant\n")
    c1 = answer(chat, s, m1, TOOL_CALL)
    m2 = m1 + [dict(c1.message), {"role": "tool", "tool_call_id": "x", "content": "5"}]
    c2 = answer(chat, s, m2, "5")
    assert c2.parent == "c1" and c2.prompt_ids[:len(c1.full_ids)] == c1.full_ids


def test_streamed_text_is_a_prefix_of_the_final_content(chat):
    """What a stream shows of a partial answer: no tool-call tag (even half of one), no stop
    string or its start, no trailing whitespace when tools are on (content is stripped)."""
    from areal_agent.chat import ChatRequest

    tools = ChatRequest(messages=[], tools=[ADD_TOOL])
    plain = ChatRequest(messages=[], stop=["STOP"])
    assert chat.shown_text("Let me add. <tool_call>\n{\"na", tools) == "Let me add."
    assert chat.shown_text("Let me add. <tool_c", tools) == "Let me add."
    assert chat.shown_text("  The answer ", tools) == "The answer"
    assert chat.shown_text("The answer is 5. STOP and more", plain) == "The answer is 5. "
    assert chat.shown_text("The answer is 5. ST", plain) == "The answer is 5. "
    assert chat.shown_text("The answer <tool_c", plain) == "The answer <tool_c"  # no tools: no tag to hold
    assert chat.shown_text("caf\ufffd", plain) == "caf"  # half a UTF-8 character
