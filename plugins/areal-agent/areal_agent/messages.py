"""Chat messages in one normal form, whatever API shape they arrived in.

A normal message is ``{"role", "content": str}`` plus, for an assistant turn that called tools,
``"tool_calls": [{"id", "type": "function", "function": {"name", "arguments": dict}}]`` and, for
a tool result, ``"tool_call_id"``. Arguments are dicts so chat templates can ``tojson`` them.
:func:`message_key` is what two renderings of "the same turn" share (ids and whitespace ignored).
"""

from __future__ import annotations

import json
from typing import Any

from areal_agent.toolcalls import arguments_of
from areal_core.plugin import ArealError

ROLES = ("system", "developer", "user", "assistant", "tool")


def text_of(content: Any, where: str) -> str:
    """Plain text of an OpenAI / Anthropic content field: a string, None, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ArealError(f"{where}.content[{i}]: only text parts are supported (got {kind!r})")
        return "".join(parts)
    raise ArealError(f"{where}.content: expected a string or a list of text parts (got {type(content).__name__})")


def normalize_message(msg: dict[str, Any], where: str) -> dict[str, Any]:
    role = msg.get("role")
    if role not in ROLES:
        raise ArealError(f"{where}.role: {role!r} is not one of {list(ROLES)}")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role,
                           "content": text_of(msg.get("content"), where)}
    if role == "assistant" and msg.get("tool_calls"):
        out["tool_calls"] = [{"id": tc.get("id", ""), "type": "function",
                              "function": {"name": tc.get("function", {}).get("name", ""),
                                           "arguments": arguments_of(tc)}}
                             for tc in msg["tool_calls"]]
    if role == "tool":
        out["tool_call_id"] = msg.get("tool_call_id", "")
    return out


def normalize_messages(messages: list[dict[str, Any]], where: str = "messages") -> list[dict[str, Any]]:
    if not messages:
        raise ArealError(f"{where}: at least one message is required")
    return [normalize_message(m, f"{where}[{i}]") for i, m in enumerate(messages)]


def message_key(msg: dict[str, Any]) -> tuple:
    calls = tuple((tc["function"]["name"], json.dumps(tc["function"]["arguments"], sort_keys=True))
                  for tc in msg.get("tool_calls", ()))
    return msg["role"], msg["content"].strip(), calls


def to_openai_message(msg: dict[str, Any]) -> dict[str, Any]:
    """A normal assistant message as the chat completions API returns it (arguments as JSON text)."""
    out: dict[str, Any] = {"role": "assistant", "content": msg["content"] if msg["content"] or not msg.get("tool_calls") else None}
    if msg.get("tool_calls"):
        out["tool_calls"] = [{"id": tc["id"], "type": "function",
                              "function": {"name": tc["function"]["name"],
                                           "arguments": json.dumps(tc["function"]["arguments"], ensure_ascii=False)}}
                             for tc in msg["tool_calls"]]
    return out
