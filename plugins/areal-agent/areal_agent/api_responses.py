"""``POST /v1/responses``: the Responses API shape (what the OpenAI Agents SDK calls by default).

Input items become chat messages::

    instructions                                  -> system message (first)
    "text" | {role, content}                      -> a message of that role
    {type: function_call, call_id, name, arguments} -> tool call on the preceding assistant turn
    {type: function_call_output, call_id, output}   -> {role: tool, tool_call_id, content}
    {type: reasoning}                             -> dropped (the model's own text carries it)

The answer's output is a ``message`` item (when there is text) and one ``function_call`` item per
tool call. ``previous_response_id`` (server-side conversation state) is not supported: clients
send the whole conversation, as the Agents SDK does by default.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from areal_agent.api_chat import sampling_from, tool_mode
from areal_agent.chat import ChatRequest, choose_tools
from areal_agent.messages import normalize_message
from areal_agent.session import CallRecord
from areal_agent.streaming import TextStream, sse
from areal_core.plugin import ArealError, SamplingParams


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[dict[str, Any]]
    model: str = ""
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_output_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    previous_response_id: str | None = None
    # accepted, no effect here
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    stream_options: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None

    def to_chat(self, defaults: SamplingParams) -> ChatRequest:
        if self.previous_response_id or self.conversation:
            raise ArealError("responses: previous_response_id / conversation (server-side state) are not supported; "
                             "send the whole conversation in input")
        if self.background:
            raise ArealError("responses: background=true is not supported")
        tools = [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters") if k in t}}
                 for t in self.tools or [] if t.get("type") == "function"] or None
        return ChatRequest(messages=input_messages(self.input, self.instructions),
                           sampling=sampling_from(defaults, self.temperature, self.top_p, self.max_output_tokens, None),
                           **choose_tools(*tool_mode(self.tool_choice), tools))


def input_messages(items: str | list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    for i, item in enumerate(items):
        where, kind = f"input[{i}]", item.get("type", "message")
        if kind == "message":
            messages.append(normalize_message(item, where))
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "{}")}}
            if not (messages and messages[-1]["role"] == "assistant"):
                messages.append({"role": "assistant", "content": ""})
            last = messages[-1]
            last["tool_calls"] = last.get("tool_calls", []) + normalize_message(
                {"role": "assistant", "tool_calls": [call]}, where)["tool_calls"]
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        elif kind != "reasoning":
            raise ArealError(f"{where}.type: {kind!r} is not supported (message, function_call, function_call_output)")
    if not messages:
        raise ArealError("input: at least one item is required")
    return messages


def response_json_shell(call_id: str, model: str) -> dict[str, Any]:
    """A response object without output or usage."""
    return {"id": "resp_" + call_id.split("-", 1)[-1], "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model, "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "error": None, "incomplete_details": None, "metadata": {}, "usage": None}


def response_json(record: CallRecord, model: str, msg_id: str | None = None) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    msg = record.message
    if msg["content"] or not msg.get("tool_calls"):
        output.append({"type": "message", "id": msg_id or "msg_" + uuid.uuid4().hex[:24], "status": "completed",
                       "role": "assistant",
                       "content": [{"type": "output_text", "text": msg["content"], "annotations": [], "logprobs": []}]})
    for tc in msg.get("tool_calls", []):
        output.append({"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:24], "call_id": tc["id"],
                       "name": tc["function"]["name"], "status": "completed",
                       "arguments": json.dumps(tc["function"]["arguments"], ensure_ascii=False)})
    p, o = len(record.prompt_ids), len(record.completion_ids)
    return dict(response_json_shell(record.call_id, model), output=output,
                usage={"input_tokens": p, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
                       "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + o})


async def response_events(stream: TextStream, model: str) -> AsyncIterator[str]:
    """The answer as Responses stream events: created; the message item with ``output_text.delta``
    events as text is generated; one added/done pair per function call; completed."""
    seq = iter(range(1 << 30))
    msg_id = "msg_" + uuid.uuid4().hex[:24]

    def event(kind: str, **body) -> str:
        return sse(kind, type=kind, sequence_number=next(seq), **body)

    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message(status: str, text: str | None) -> dict[str, Any]:
        return {"type": "message", "id": msg_id, "status": status, "role": "assistant",
                "content": [] if text is None else [part(text)]}

    pending = dict(response_json_shell(stream.call_id, model), status="in_progress", output=[])
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    opened = False
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    async for _, delta in stream:
        if not opened:
            yield event("response.output_item.added", output_index=0, item=message("in_progress", None))
            yield event("response.content_part.added", **where, part=part(""))
            opened = True
        yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
    (record,) = stream.records
    final = response_json(record, model, msg_id=msg_id)
    items = final["output"]
    if items and items[0]["type"] == "message":
        text = items[0]["content"][0]["text"]
        if not opened:
            yield event("response.output_item.added", output_index=0, item=message("in_progress", None))
            yield event("response.content_part.added", **where, part=part(""))
        if rest := stream.remainder(0):
            yield event("response.output_text.delta", **where, delta=rest, logprobs=[])
        yield event("response.output_text.done", **where, text=text, logprobs=[])
        yield event("response.content_part.done", **where, part=part(text))
        yield event("response.output_item.done", output_index=0, item=items[0])
    for i, item in enumerate(items):
        if item["type"] == "function_call":
            yield event("response.output_item.added", output_index=i, item=dict(item, status="in_progress", arguments=""))
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=i, arguments=item["arguments"])
            yield event("response.output_item.done", output_index=i, item=item)
    yield event("response.completed", response=final)
