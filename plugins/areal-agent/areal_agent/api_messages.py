"""``POST /v1/messages``: the Anthropic Messages API shape (what the ``anthropic`` SDK calls).

Request content becomes chat messages (:mod:`areal_agent.messages` normal form)::

    system: str | [{type: text, text}]                 -> system message (first)
    {role: user, content: str | [blocks]}              -> user message (text blocks joined)
    [{type: tool_result, tool_use_id, content, is_error}] in a user turn
                                                       -> {role: tool, tool_call_id, content}
                                                          ("error: " put before an is_error result)
    {role: assistant, content: [text, tool_use{id, name, input}]}
                                                       -> assistant message with tool_calls
    {type: thinking | redacted_thinking}               -> dropped (the model's own text carries it)
    tools: [{name, description, input_schema}]         -> function tools (input_schema = parameters)

The answer is a ``message`` with ``text`` and ``tool_use`` blocks; ``stop_reason`` is ``tool_use``
(the model called a tool), ``max_tokens``, ``stop_sequence`` (with ``stop_sequence`` set) or
``end_turn``. ``tool_choice`` ``{"type": "none"}`` hides the tools, ``auto`` (the default) lets the
model decide, ``any`` / ``{"type": "tool", "name": ...}`` make the answer a call (of that tool): see
:mod:`areal_agent.chat`. Images, documents and server tools
are a 400 naming the block.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from areal_agent.api_chat import sampling_from
from areal_agent.chat import ChatRequest, choose_tools
from areal_agent.session import CallRecord
from areal_agent.streaming import TextStream, sse
from areal_core.plugin import ArealError, SamplingParams


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    # accepted, no effect here (fields of the API and of recent SDKs)
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    service_tier: str | None = None
    cache_control: dict[str, Any] | None = None
    container: str | dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    inference_geo: str | None = None
    output_config: dict[str, Any] | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    def to_chat(self, defaults: SamplingParams) -> ChatRequest:
        tools = [function_tool(t, f"tools[{i}]") for i, t in enumerate(self.tools or [])] or None
        sampling = sampling_from(defaults, self.temperature, self.top_p, self.max_tokens, None)
        if self.top_k:
            sampling.top_k = self.top_k
        return ChatRequest(messages=chat_messages(self.system, self.messages),
                           stop=list(self.stop_sequences) if self.stop_sequences else None, sampling=sampling,
                           **choose_tools(*tool_mode(self.tool_choice), tools))


def tool_mode(choice: dict[str, Any] | None) -> tuple[str, str | None]:
    """(mode, tool name) of a Messages ``tool_choice`` (see choose_tools)."""
    kind = (choice or {"type": "auto"}).get("type")
    if kind in ("none", "auto", "any"):
        return {"any": "required"}.get(kind, kind), None
    if kind == "tool" and isinstance((choice or {}).get("name"), str):
        return "required", (choice or {})["name"]
    raise ArealError(f"tool_choice: {choice!r} is not supported: use type 'none', 'auto', 'any' or 'tool' with a name")


def function_tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    """An Anthropic client tool as an OpenAI function tool (what chat templates render)."""
    if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
        raise ArealError(f"{where}: only client tools with an input_schema are supported (got type {tool.get('type')!r})")
    if not isinstance(tool.get("name"), str):
        raise ArealError(f"{where}.name: a string is required")
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _text(content: Any, where: str) -> str:
    """Text of a tool_result's content or of a system field: a string or a list of text blocks."""
    if isinstance(content, str) or content is None:
        return content or ""
    if isinstance(content, list):
        parts = []
        for i, block in enumerate(content):
            if not (isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)):
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise ArealError(f"{where}[{i}]: only text blocks are supported here (got {kind!r})")
            parts.append(block["text"])
        return "".join(parts)
    raise ArealError(f"{where}: expected a string or a list of text blocks (got {type(content).__name__})")


def chat_messages(system: str | list[dict[str, Any]] | None, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's system + messages in normal form (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _text(system, "system")})
    if not messages:
        raise ArealError("messages: at least one message is required")
    for i, msg in enumerate(messages):
        where, role, content = f"messages[{i}]", msg.get("role"), msg.get("content")
        if role not in ("user", "assistant"):
            raise ArealError(f"{where}.role: {role!r} is not one of ['user', 'assistant'] (system goes in the system field)")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise ArealError(f"{where}.content: expected a string or a list of content blocks")
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            at = f"{where}.content[{j}]"
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "tool_use" and role == "assistant":
                if not isinstance(block.get("input", {}), dict):
                    raise ArealError(f"{at}.input: an object is required")
                calls.append({"id": block.get("id", ""), "type": "function",
                              "function": {"name": block.get("name", ""), "arguments": block.get("input", {})}})
            elif kind == "tool_result" and role == "user":
                result = _text(block.get("content"), f"{at}.content")
                if block.get("is_error") and not result.startswith("error"):
                    result = "error: " + result
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": result})
            elif kind not in ("thinking", "redacted_thinking"):
                raise ArealError(f"{at}.type: {kind!r} is not supported in a {role} turn "
                                 "(text, tool_use from the assistant, tool_result from the user)")
        if role == "assistant":
            out.append({"role": "assistant", "content": "".join(text), **({"tool_calls": calls} if calls else {})})
        elif text:
            out.append({"role": "user", "content": "".join(text)})
    return out


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def stop_reason(record: CallRecord, stops: list[str] | None, decode) -> tuple[StopReason, str | None]:
    """(stop_reason, the stop sequence that ended the answer or None)."""
    if record.finish_reason == "tool_calls":
        return "tool_use", None
    if record.finish_reason == "length":
        return "max_tokens", None
    text = decode(record.completion_ids)
    hit = [s for s in stops or [] if s in text]
    if hit:
        return "stop_sequence", min(hit, key=text.index)
    return "end_turn", None


def content_blocks(record: CallRecord) -> list[dict[str, Any]]:
    msg = record.message
    blocks: list[dict[str, Any]] = [{"type": "text", "text": msg["content"]}] if msg["content"] else []
    for tc in msg.get("tool_calls", []):
        blocks.append({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": tc["function"]["arguments"]})
    return blocks


def message_json(record: CallRecord, model: str, reason: tuple[StopReason, str | None]) -> dict[str, Any]:
    return {"id": "msg_" + record.call_id.split("-", 1)[-1], "type": "message", "role": "assistant", "model": model,
            "content": content_blocks(record), "stop_reason": reason[0], "stop_sequence": reason[1],
            "usage": {"input_tokens": len(record.prompt_ids), "output_tokens": len(record.completion_ids)}}


async def message_events(stream: TextStream, model: str, stops: list[str] | None, decode) -> AsyncIterator[str]:
    """The answer as Messages stream events: message_start, content blocks (text deltas as they are
    generated, each tool_use's input as one input_json_delta), message_delta, message_stop."""
    start: dict[str, Any] = {"id": "msg_" + stream.call_id.split("-", 1)[-1], "type": "message", "role": "assistant", "model": model,
             "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": stream.prompt_tokens, "output_tokens": 0}}
    yield sse(type="message_start", message=start, event="message_start")
    index = 0
    text_open = False
    async for _, delta in stream:
        if not text_open:
            yield sse(type="content_block_start", index=0, content_block={"type": "text", "text": ""}, event="content_block_start")
            text_open = True
        yield sse(type="content_block_delta", index=0, delta={"type": "text_delta", "text": delta}, event="content_block_delta")
    (record,) = stream.records
    rest = stream.remainder(0)
    if rest and not text_open:
        yield sse(type="content_block_start", index=0, content_block={"type": "text", "text": ""}, event="content_block_start")
        text_open = True
    if rest:
        yield sse(type="content_block_delta", index=0, delta={"type": "text_delta", "text": rest}, event="content_block_delta")
    if text_open:
        yield sse(type="content_block_stop", index=0, event="content_block_stop")
        index = 1
    for block in content_blocks(record):
        if block["type"] != "tool_use":
            continue
        yield sse(type="content_block_start", index=index, content_block=dict(block, input={}), event="content_block_start")
        yield sse(type="content_block_delta", index=index, event="content_block_delta",
                  delta={"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)})
        yield sse(type="content_block_stop", index=index, event="content_block_stop")
        index += 1
    reason, sequence = stop_reason(record, stops, decode)
    yield sse(type="message_delta", delta={"stop_reason": reason, "stop_sequence": sequence},
              usage={"output_tokens": len(record.completion_ids)}, event="message_delta")
    yield sse(type="message_stop", event="message_stop")
