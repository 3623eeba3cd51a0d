"""Streamed answers: text deltas while a call is being generated, then the finished records.

``InferenceEngine.agenerate`` (the only generation call of areal's inference protocol) returns a
finished completion, and the inference backends' ``/generate`` is not streamed. A streamed call
therefore generates in rounds of at most ``ChatModel.stream_chunk_tokens`` tokens, each round
continuing the tokens so far (the path the rollout client already takes when a weight update
interrupts a call: same logprobs, per-token versions), and shows the text after each round::

    round 1: prompt                 -> t1..t8     shown: "The ans"
    round 2: prompt + t1..t8        -> t9..t16    shown: "wer is 5."   (+ eos: done)

What is shown is always a prefix of the final ``content`` (:meth:`ChatModel.shown_text`): text
from ``<tool_call>`` on, a partial tag or stop string at the end, trailing whitespace and half a
UTF-8 character are held back; tool calls are sent whole once the answer is finished. The cost:
each round submits the prompt again (one prefill per round on a server without prefix caching).
The recorded call is the same as an unstreamed one (one CallRecord per choice).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from areal_agent.chat import ChatModel, ChatRequest
from areal_agent.session import CallRecord, Session
from areal_core.plugin import InferenceEngine

_END = object()


def sse(event: str | None = None, **body) -> str:
    """One server-sent event: ``data: {json}`` (with an ``event:`` line when named)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(body, ensure_ascii=False)}\n\n"


class TextStream:
    """One streamed call. ``await start()`` runs the first round (so a failing engine is an HTTP
    error, not a broken stream); ``async for index, delta in stream`` yields text as it is
    generated; afterwards ``records`` holds the calls and ``remainder(i)`` the content not yet
    shown. Leaving the iteration early (client gone) cancels the generation."""

    def __init__(self, chat: ChatModel, engine: InferenceEngine, session: Session | None, req: ChatRequest):
        self.chat, self.engine, self.session, self.req = chat, engine, session, req
        self.shown = [""] * req.n
        self.records: list[CallRecord] = []
        self.call_id = req.call_id = req.call_id or "chatcmpl-" + uuid.uuid4().hex[:24]
        self.prompt_tokens = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._first: tuple[int, str] | object | None = None

    async def start(self) -> None:
        prompt, parent = self.chat.call_prompt(self.session, self.req)
        self.prompt_tokens = len(prompt)
        self._task = asyncio.ensure_future(self.chat.generate(self.engine, self.session, self.req, prompt, parent, self._on_text))
        self._task.add_done_callback(lambda _t: self._queue.put_nowait(_END))
        self._first = await self._queue.get()
        if self._first is _END:
            self._finish()

    def _on_text(self, index: int, text: str) -> None:
        if len(text) > len(self.shown[index]):
            delta, self.shown[index] = text[len(self.shown[index]):], text
            self._queue.put_nowait((index, delta))

    def _finish(self) -> None:
        assert self._task is not None
        self.records = self._task.result()  # raises what generation raised

    async def __aiter__(self) -> AsyncIterator[tuple[int, str]]:
        assert self._task is not None, "call start() first"
        try:
            item = self._first
            while item is not _END:
                yield item  # type: ignore[misc]
                item = await self._queue.get()
            self._finish()
        finally:
            if not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    def remainder(self, index: int) -> str:
        """The final content of choice ``index`` after what was shown."""
        content = self.records[index].message["content"]
        return content[len(self.shown[index]):] if content.startswith(self.shown[index]) else ""
