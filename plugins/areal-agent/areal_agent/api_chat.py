"""``POST /v1/chat/completions``: the request model and the answer (JSON or server-sent events).

Fields that change nothing here (``logit_bias``, ``response_format``, ``presence_penalty``, ...)
are accepted so unmodified clients work, and ignored; a field the API does not have is a 400
naming it. ``tool_choice``: ``"none"`` hides the tools from the model, ``"auto"`` (the default)
lets it decide, ``"required"`` or ``{"type": "function", "function": {"name": ...}}`` makes the
answer a call (of that tool): see :mod:`areal_agent.chat`. ``stream: true`` sends server-sent events:
content deltas while the answer is generated (in rounds of ``stream_chunk_tokens``, see
:mod:`areal_agent.streaming`), tool calls whole once it is finished.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from areal_agent.chat import ChatRequest, choose_tools
from areal_agent.messages import normalize_messages, to_openai_message
from areal_agent.session import CallRecord
from areal_agent.streaming import TextStream, sse
from areal_core.plugin import ArealError, SamplingParams


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]]
    model: str = ""
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=64)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    # accepted, no effect here
    parallel_tool_calls: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    verbosity: str | None = None

    def to_chat(self, defaults: SamplingParams) -> ChatRequest:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return ChatRequest(messages=normalize_messages(self.messages), n=self.n, stop=stop or None,
                           sampling=sampling_from(defaults, self.temperature, self.top_p,
                                                  self.max_completion_tokens or self.max_tokens, self.seed),
                           **choose_tools(*tool_mode(self.tool_choice), openai_tools(self.tools)))


def tool_mode(choice: str | dict[str, Any] | None) -> tuple[str, str | None]:
    """(mode, tool name) of a chat-completions or Responses ``tool_choice`` (see choose_tools)."""
    if choice is None or choice in ("none", "auto", "required"):
        return choice or "auto", None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name", choice.get("function", {}).get("name"))  # Responses: flat; chat: nested
        if isinstance(name, str):
            return "required", name
    raise ArealError(f"tool_choice: {choice!r} is not supported: use 'none', 'auto', 'required' or a function "
                     "tool by name")


def openai_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Chat-completions tools as given (``{"type": "function", "function": {...}}``), or None."""
    return [t for t in tools if t.get("type", "function") == "function"] or None if tools else None


def sampling_from(defaults: SamplingParams, temperature, top_p, max_tokens, seed) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_tokens or defaults.max_new_tokens,
                          temperature=defaults.temperature if temperature is None else temperature,
                          top_p=defaults.top_p if top_p is None else top_p, top_k=defaults.top_k,
                          stop_token_ids=list(defaults.stop_token_ids), seed=seed)


def usage(records: list[CallRecord]) -> dict[str, int]:
    prompt = len(records[0].prompt_ids)
    completion = sum(len(r.completion_ids) for r in records)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_json(records: list[CallRecord], model: str) -> dict[str, Any]:
    return {"id": records[0].call_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": to_openai_message(r.message), "finish_reason": r.finish_reason,
                         "logprobs": None} for i, r in enumerate(records)],
            "usage": usage(records)}


async def completion_events(stream: TextStream, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The answer as ``chat.completion.chunk`` events: a role chunk per choice, content deltas as
    they are generated, then per choice the rest of its content, its tool calls and its
    finish_reason; the usage chunk (if asked) and ``data: [DONE]`` last."""
    base: dict[str, Any] = {"id": stream.call_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def event(choices, **extra) -> str:
        return sse(None, **base, choices=choices, **extra)

    for i in range(stream.req.n):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    async for i, delta in stream:
        yield event([{"index": i, "delta": {"content": delta}, "finish_reason": None}])
    for i, r in enumerate(stream.records):
        if rest := stream.remainder(i):
            yield event([{"index": i, "delta": {"content": rest}, "finish_reason": None}])
        for j, tc in enumerate(to_openai_message(r.message).get("tool_calls", [])):
            yield event([{"index": i, "delta": {"tool_calls": [dict(tc, index=j)]}, "finish_reason": None}])
        yield event([{"index": i, "delta": {}, "finish_reason": r.finish_reason}])
    if include_usage:
        yield event([], usage=usage(stream.records))
    yield "data: [DONE]\n\n"
