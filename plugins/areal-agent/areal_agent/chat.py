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

**Forced tool calls.** ``tool_choice`` "required" (any tool) or naming a tool makes the answer
begin with a tool call: :func:`areal_agent.toolcalls.forced_call_prefix` is appended to the
prompt (so those tokens are prompt, never trained on) and parsed together with the completion.
The model still writes the call (the name unless forced, the arguments always); a call it breaks
is reported like any broken call, there is no constrained decoding.

**Stop strings** are applied after generation: the completion is cut at the shortest token prefix
whose text contains a stop string (a stop string of exactly one token also stops the server).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from areal_agent.messages import message_key
from areal_agent.session import CallRecord, Session
from areal_agent.templates import TEMPLATES
from areal_agent.toolcalls import TOOL_CALL_OPEN, forced_call_prefix, parse_tool_calls
from areal_core.plugin import ArealError, InferenceEngine, ModelRequest, ModelResponse, SamplingParams


@dataclass
class ChatRequest:
    """What every API shape (chat completions, responses, messages) is translated into."""

    messages: list[dict[str, Any]]  # normal form (areal_agent.messages)
    tools: list[dict[str, Any]] | None = None  # OpenAI chat tools: [{"type": "function", "function": {...}}]
    sampling: SamplingParams | None = None
    n: int = 1
    stop: list[str] | None = None
    call_id: str | None = None  # id of the first choice's record (others get -1, -2, ...); default: random
    force_tool: bool = False  # tool_choice required / a named tool: the answer starts with a tool call
    tool_name: str | None = None  # with force_tool: the tool it calls (None: the model chooses)

    def forced_text(self) -> str:
        """What the answer is made to begin with ("" unless a tool call is forced)."""
        return forced_call_prefix(self.tool_name) if self.force_tool else ""


def choose_tools(mode: str, name: str | None, tools: list[dict[str, Any]] | None,
                 where: str = "tool_choice") -> dict[str, Any]:
    """ChatRequest fields for a tool choice: ``mode`` "none" (the model is shown no tools), "auto"
    (it decides) or "required" (it must call ``name``, or any tool when ``name`` is None)."""
    if mode == "none" or not (tools or mode == "required"):
        return {"tools": None}
    if mode == "auto":
        return {"tools": tools}
    names = [t["function"]["name"] for t in tools or []]
    if not names:
        raise ArealError(f"{where}: a tool call is required but the request has no tools")
    if name is not None and name not in names:
        raise ArealError(f"{where}: no tool named {name!r} in tools (have {names})")
    return {"tools": tools, "force_tool": True, "tool_name": name}


class ChatModel:
    """A tokenizer + chat template + engine. ``chat_template``: ``"tokenizer"`` (its own),
    ``"hermes"`` (:mod:`areal_agent.templates`) or a Jinja string."""

    def __init__(self, tokenizer, chat_template: str = "tokenizer", default_max_tokens: int = 256,
                 stream_chunk_tokens: int = 8):
        self.tokenizer = tokenizer
        self.template = None if chat_template == "tokenizer" else TEMPLATES.get(chat_template, chat_template)
        if self.template is None and not getattr(tokenizer, "chat_template", None):
            raise ArealError("agent: the tokenizer has no chat template; set workflow.chat_template: hermes")
        if tokenizer.eos_token_id is None:
            raise ArealError("agent: the tokenizer has no eos token (needed to end each assistant turn)")
        self.eos_id = tokenizer.eos_token_id
        self.eos_text = tokenizer.eos_token
        self.default_max_tokens = default_max_tokens
        if stream_chunk_tokens < 1:
            raise ArealError(f"agent: stream_chunk_tokens must be >= 1 (got {stream_chunk_tokens})")
        self.stream_chunk_tokens = stream_chunk_tokens

    # ------------------------------------------------------------------ rendering
    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, generation_prompt: bool) -> str:
        kw = {"chat_template": self.template} if self.template else {}
        return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt, **kw)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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
    def call_prompt(self, session: Session | None, req: ChatRequest) -> tuple[list[int], str | None]:
        """:meth:`prompt_ids` of the request, followed by the start of a forced tool call, if any."""
        prompt, parent = self.prompt_ids(session, req.messages, req.tools)
        forced = req.forced_text()
        return (prompt + self.encode(forced) if forced else prompt), parent

    async def complete(self, engine: InferenceEngine, session: Session | None, req: ChatRequest) -> list[CallRecord]:
        """Generate ``req.n`` answers; each becomes a CallRecord appended to the session."""
        prompt, parent = self.call_prompt(session, req)
        return await self.generate(engine, session, req, prompt, parent)

    async def generate(self, engine: InferenceEngine, session: Session | None, req: ChatRequest, prompt: list[int],
                       parent: str | None, on_text: Callable[[int, str], None] | None = None) -> list[CallRecord]:
        """:meth:`complete` from a prompt already built; with ``on_text``, each answer is generated in
        rounds of ``stream_chunk_tokens`` and ``on_text(choice, shown text)`` called after each
        (areal_agent.streaming)."""
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
            responses = await asyncio.gather(*(self._generate_one(engine, req, ModelRequest(input_ids=prompt, sampling=sampling, rid=rid),
                                                                  i, on_text) for i in range(req.n)))
        finally:
            if session:
                session.in_flight -= 1
                session.touch()
        base = req.call_id or "chatcmpl-" + uuid.uuid4().hex[:24]
        records = [self._record(req, base if i == 0 else f"{base}-{i}", prompt, parent, r.output_ids, r.output_logprobs,
                                r.output_versions, r.finish_reason)
                   for i, r in enumerate(responses)]
        if session:
            session.calls.extend(records)
        return records

    async def _generate_one(self, engine: InferenceEngine, req: ChatRequest, mreq: ModelRequest, index: int,
                            on_text: Callable[[int, str], None] | None) -> ModelResponse:
        if on_text is None:
            return await engine.agenerate(mreq)
        total = mreq.sampling.max_new_tokens
        ids: list[int] = []
        logprobs: list[float] = []
        versions: list[int] = []
        rounds = 0
        while True:
            seed = None if mreq.sampling.seed is None else mreq.sampling.seed + rounds
            step = min(self.stream_chunk_tokens, total - len(ids))
            r = await engine.agenerate(replace(mreq, input_ids=list(mreq.input_ids) + ids,
                                               sampling=replace(mreq.sampling, max_new_tokens=step, seed=seed)))
            ids += r.output_ids
            logprobs += r.output_logprobs
            versions += r.output_versions
            rounds += 1
            text = self.decode(ids)
            stopped = any(s in text for s in req.stop or [])
            on_text(index, self.shown_text(text, req))
            if r.finish_reason != "length" or len(ids) >= total or stopped:
                finish = "length" if r.finish_reason == "length" and len(ids) >= total else r.finish_reason
                return ModelResponse(input_ids=list(mreq.input_ids), output_ids=ids, output_logprobs=logprobs,
                                     output_versions=versions, finish_reason=finish)

    def shown_text(self, text: str, req: ChatRequest) -> str:
        """The part of a partial answer that is surely a prefix of its final ``content``: cut at a
        stop string or ``<tool_call>``, then without a trailing partial tag / stop string, trailing
        whitespace (tool answers' content is stripped) or a half UTF-8 character. A forced tool
        call shows nothing: the whole answer is inside the call."""
        if req.force_tool:
            return ""
        holds = list(req.stop or []) + ([TOOL_CALL_OPEN] if req.tools else [])
        for h in holds:
            if h in text:
                text = text[:text.index(h)]
        for h in holds:
            for k in range(min(len(h) - 1, len(text)), 0, -1):
                if text.endswith(h[:k]):
                    text = text[:-k]
                    break
        text = text.rstrip("\ufffd")
        return text.strip() if req.tools else text

    def _record(self, req: ChatRequest, call_id: str, prompt, parent, ids, logprobs, versions, finish) -> CallRecord:
        ids, logprobs, versions = list(ids), list(logprobs), list(versions)
        if req.stop:
            cut = self._stop_cut(ids, req.stop)
            if cut is not None:
                ids, logprobs, versions, finish = ids[:cut], logprobs[:cut], versions[:cut], "stop"
        text = self.decode(ids)
        for s in req.stop or []:
            if s in text:
                text = text[:text.index(s)]
        parsed = parse_tool_calls(req.forced_text() + text) if req.tools else None
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content if parsed else text}
        if parsed and parsed.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in parsed.tool_calls]
            finish = "tool_calls"
        elif finish == "abort":
            finish = "length"
        return CallRecord(call_id=call_id, messages=req.messages, tools=req.tools,
                          prompt_ids=prompt, completion_ids=ids, logprobs=logprobs, versions=versions,
                          finish_reason=finish, message=message, parent=parent,
                          tool_call_errors=parsed.errors if parsed else [])

    def _stop_cut(self, ids: list[int], stops: list[str]) -> int | None:
        """Shortest prefix length whose decoded text contains a stop string, or None."""
        if not any(s in self.decode(ids) for s in stops):
            return None
        for n in range(1, len(ids) + 1):
            if any(s in self.decode(ids[:n]) for s in stops):
                return n
        return None
