"""Tool calls in the Qwen / Hermes text format, parsed out of a completion.

The model writes a call as ``<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>``
(whitespace around the JSON allowed), possibly several, before or after plain text::

    "Let me add. <tool_call>\\n{"name": "add", "arguments": {"a": 2, "b": 3}}\\n</tool_call>"
    -> content "Let me add.", calls [ToolCall("add", {"a": 2, "b": 3})]

A block whose JSON is broken (or lacks ``name``) is kept in the content as text and reported in
``errors``: the client sees what the model wrote, and the call record says why it is no tool call.

A forced call (``tool_choice`` required, or naming a tool) is the same text with its start written
for the model: :func:`forced_call_prefix` is appended to the prompt and the model continues it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])


@dataclass
class ParsedOutput:
    content: str
    tool_calls: list[ToolCall]
    errors: list[str]


def parse_tool_calls(text: str) -> ParsedOutput:
    """Split a completion into plain content and the tool calls it makes."""
    calls: list[ToolCall] = []
    errors: list[str] = []
    kept: list[str] = []
    last = 0
    for match in TOOL_CALL_RE.finditer(text):
        body = match.group(1)
        try:
            obj = json.loads(body)
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                raise TypeError('expected an object with a string "name"')
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                args = json.loads(args)
            if not isinstance(args, dict):
                raise TypeError('"arguments" must be an object')
        except (ValueError, TypeError) as exc:
            errors.append(f"tool call {len(calls) + len(errors)}: {exc}: {body[:200]!r}")
            continue
        kept.append(text[last:match.start()])
        last = match.end()
        calls.append(ToolCall(obj["name"], args))
    kept.append(text[last:])
    return ParsedOutput(content="".join(kept).strip(), tool_calls=calls, errors=errors)


def forced_call_prefix(name: str | None) -> str:
    """The start of a tool call an answer is made to begin with: ``<tool_call>\\n``, then, when the
    tool is named, ``{"name": "NAME", "arguments":`` (the model writes the arguments). Each ends
    where the Qwen pre-tokenizer splits, so the model's next token starts a pre-token, as in a call
    it wrote itself."""
    return TOOL_CALL_OPEN + "\n" + ("" if name is None else '{"name": ' + json.dumps(name) + ', "arguments":')


def arguments_of(tool_call: dict[str, Any]) -> dict[str, Any]:
    """The arguments of an OpenAI ``tool_calls`` entry as a dict (clients send a JSON string)."""
    args = tool_call.get("function", {}).get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return {"__unparsed__": args}
    return args if isinstance(args, dict) else {"__value__": args}
