"""Chat calls on an ``InferenceEngine``: render the chat template, generate, parse tool calls, record.

**Prompt tokens, turn after turn.** Re-tokenizing a conversation's text does not give back the
tokens the model sampled (BPE has many tokenizations of one string), so a later turn would train
on tokens the model never produced. :meth:`ChatModel.prompt_ids` therefore splices: when a
request's messages continue an earlier call of the session (same messages, then that call's
answer), its prompt is::

    earlier.prompt_ids + earlier.completion_ids + tokenize(text after the answer's end token)

where the text comes from rendering the whole conversation with the chat template. The earlier
call's sequence is then an exact token prefix of the new one (what concat export relies on). A
request that continues nothing (or an earlier answer cut by ``length``) is rendered from scratch.

**Stop strings** are applied after generation: the completion is cut at the shortest token prefix
whose text contains a stop string (a stop string of exactly one token also stops the server).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from typing import Any

from areal_agent.messages import message_key
from areal_agent.session import CallRecord, Session
from areal_agent.templates import TEMPLATES
from areal_agent.toolcalls import parse_tool_calls
from areal_core.plugin import ArealError, InferenceEngine, ModelRequest, SamplingParams


@dataclass
class ChatRequest:
    """What every API shape (chat completions, responses, messages) is translated into."""

    messages: list[dict[str, Any]]  # normal form (areal_agent.messages)
    tools: list[dict[str, Any]] | None = None  # OpenAI chat tools: [{"type": "function", "function": {...}}]
    sampling: SamplingParams | None = None
    n: int = 1
    stop: list[str] | None = None


class ChatModel:
    """A tokenizer + chat template + engine. ``chat_template``: ``"tokenizer"`` (its own),
    ``"hermes"`` (:mod:`areal_agent.templates`) or a Jinja string."""

    def __init__(self, tokenizer, chat_template: str = "tokenizer", default_max_tokens: int = 256):
        self.tokenizer = tokenizer
        self.template = None if chat_template == "tokenizer" else TEMPLATES.get(chat_template, chat_template)
        if self.template is None and not getattr(tokenizer, "chat_template", None):
            raise ArealError("agent: the tokenizer has no chat template; set workflow.chat_template: hermes")
        if tokenizer.eos_token_id is None:
            raise ArealError("agent: the tokenizer has no eos token (needed to end each assistant turn)")
        self.eos_id = tokenizer.eos_token_id
        self.eos_text = tokenizer.eos_token
        self.default_max_tokens = default_max_tokens

    # ------------------------------------------------------------------ rendering
    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, generation_prompt: bool) -> str:
        kw = {"chat_template": self.template} if self.template else {}
        return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt, **kw)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, session: Session | None, messages: list[dict[str, Any]],
                   tools: list[dict[str, Any]] | None) -> tuple[list[int], str | None]:
        """(prompt token ids, the call they continue or None); see the module docstring."""
        full = self.render(messages, tools, True)
        keys = [message_key(m) for m in messages]
        for call in reversed(session.calls if session else []):
            k = len(call.messages)
            if (len(messages) > k and call.tools == tools and call.completion_ids
                    and call.completion_ids[-1] == self.eos_id
                    and keys[:k] == [message_key(m) for m in call.messages] and keys[k] == message_key(call.message)):
                anchor = self.render(messages[:k + 1], tools, False)
                cut = anchor.rfind(self.eos_text) + len(self.eos_text)
                if cut >= len(self.eos_text) and full.startswith(anchor[:cut]):
                    return call.full_ids + self.encode(full[cut:]), call.call_id
        return self.encode(full), None

    # ------------------------------------------------------------------ generation
    async def complete(self, engine: InferenceEngine, session: Session | None, req: ChatRequest) -> list[CallRecord]:
        """Generate ``req.n`` answers; each becomes a CallRecord appended to the session."""
        prompt, parent = self.prompt_ids(session, req.messages, req.tools)
        sampling = req.sampling or SamplingParams(max_new_tokens=self.default_max_tokens)
        stops = list(sampling.stop_token_ids)
        for s in req.stop or []:
            ids = self.encode(s)
            if len(ids) == 1 and ids[0] not in stops:
                stops.append(ids[0])
        if self.eos_id not in stops:
            stops.append(self.eos_id)
        sampling = replace(sampling, stop_token_ids=stops)
        rid = session.id if session else uuid.uuid4().hex
        if session:
            session.in_flight += 1
        try:
            responses = await asyncio.gather(*(engine.agenerate(ModelRequest(input_ids=prompt, sampling=sampling, rid=rid))
                                               for _ in range(req.n)))
        finally:
            if session:
                session.in_flight -= 1
                session.touch()
        records = [self._record(req, prompt, parent, r.output_ids, r.output_logprobs, r.output_versions, r.finish_reason)
                   for r in responses]
        if session:
            session.calls.extend(records)
        return records

    def _record(self, req: ChatRequest, prompt, parent, ids, logprobs, versions, finish) -> CallRecord:
        ids, logprobs, versions = list(ids), list(logprobs), list(versions)
        if req.stop:
            cut = self._stop_cut(ids, req.stop)
            if cut is not None:
                ids, logprobs, versions, finish = ids[:cut], logprobs[:cut], versions[:cut], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for s in req.stop or []:
            if s in text:
                text = text[:text.index(s)]
        parsed = parse_tool_calls(text) if req.tools else None
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content if parsed else text}
        if parsed and parsed.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in parsed.tool_calls]
            finish = "tool_calls"
        elif finish == "abort":
            finish = "length"
        return CallRecord(call_id="chatcmpl-" + uuid.uuid4().hex[:24], messages=req.messages, tools=req.tools,
                          prompt_ids=prompt, completion_ids=ids, logprobs=logprobs, versions=versions,
                          finish_reason=finish, message=message, parent=parent,
                          tool_call_errors=parsed.errors if parsed else [])

    def _stop_cut(self, ids: list[int], stops: list[str]) -> int | None:
        """Shortest prefix length whose decoded text contains a stop string, or None."""
        if not any(s in self.tokenizer.decode(ids, skip_special_tokens=True) for s in stops):
            return None
        for n in range(1, len(ids) + 1):
            if any(s in self.tokenizer.decode(ids[:n], skip_special_tokens=True) for s in stops):
                return n
        return None
