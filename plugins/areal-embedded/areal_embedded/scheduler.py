"""Continuous batching: one thread owns the model and runs the batch a step at a time.

Every loop iteration: apply control commands (pause, continue, abort, weight updates), admit
waiting requests into free rows (one batched prefill), then one decode step for every running
row. A sequence leaves the batch the step it finishes (stop token, eos, ``max_new_tokens``),
and its row is refilled by the last row so the batch stays dense; no request waits for the
slowest one. HTTP handlers talk to the thread through :meth:`Scheduler.submit` and
:meth:`Scheduler.command`, both thread-safe.

Pause aborts every running sequence (it returns its partial output, finish reason ``abort``)
and stops admission; queued and new requests wait until continue. A weight update runs only
with no sequence running: it waits for the batch to drain (admission stopped meanwhile), or
aborts the running sequences first when asked to. So every response was produced by one weight
version, which it reports.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from areal_embedded.runner import ModelRunner
from areal_embedded.sampler import BatchSampling, sample

log = logging.getLogger("areal_embedded")


@dataclass
class Sequence:
    """One completion in flight. Slots ``start..end-1`` of its cache row hold its tokens."""

    rid: str
    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop_ids: frozenset[int]
    rng: random.Random
    on_done: Callable[[dict[str, Any] | BaseException], None]
    output: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    start: int = 0
    end: int = 0
    version: int = 0
    created: float = field(default_factory=time.perf_counter)
    finish: dict[str, Any] | None = None
    media: dict[str, Any] = field(default_factory=dict)  # the prompt's image inputs (shared by its n samples)
    position_offset: int = 0  # rotary position of slot i is i - start + position_offset (images shift it)

    @functools.cached_property
    def prefill_key(self) -> tuple:
        """Waiting sequences with equal keys share one prefill: the same prompt tokens (the n
        samples of a prompt, whether sent as one request with ``n`` or as n requests) and, with
        images, the same request's image inputs."""
        return tuple(self.prompt), id(self.media) if self.media else 0

    def record(self, token: int, logprob: float) -> None:
        """Append a sampled token and decide whether the sequence is finished."""
        self.output.append(token)
        self.logprobs.append(logprob)
        if token in self.stop_ids:
            self.finish = {"type": "stop", "matched": token}
        elif len(self.output) >= self.max_new_tokens:
            self.finish = {"type": "length", "length": self.max_new_tokens}

    def result(self) -> dict[str, Any]:
        """The SGLang-shaped ``/generate`` answer (``text`` is filled in by the HTTP layer)."""
        return {
            "output_ids": list(self.output),
            "meta_info": {
                "id": self.rid,
                "finish_reason": self.finish,
                "prompt_tokens": len(self.prompt),
                "completion_tokens": len(self.output),
                "cached_tokens": 0,
                "weight_version": str(self.version),
                "output_token_logprobs": [[lp, t, None] for lp, t in zip(self.logprobs, self.output)],
                "e2e_latency": time.perf_counter() - self.created,
            },
        }


@dataclass
class Command:
    """A control request for the model thread. ``exclusive`` ones need an empty batch."""

    kind: str
    run: Callable[[], Any] | None = None
    exclusive: bool = False
    abort_running: bool = False
    targets: Callable[[Sequence], bool] | None = None  # "abort": which sequences (None: all)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


PAD_LIMIT = 1.5  # a prefill batch's padded tokens (N × longest prompt) over its prompt tokens, at most
ADMIT_SCAN = 1024  # waiting sequences one admission looks at


class Scheduler:
    """The model thread: admission, batched prefill, batched decode, control commands."""

    def __init__(self, runner: ModelRunner, max_batch: int, max_prefill_tokens: int, version: int = 0):
        self.runner = runner
        self.max_batch = max_batch
        self.max_prefill_tokens = max_prefill_tokens
        self.version = version
        self.paused = False
        self.running: list[Sequence] = []
        self.waiting: collections.deque[Sequence] = collections.deque()
        self._commands: collections.deque[Command] = collections.deque()
        self._exclusive: collections.deque[Command] = collections.deque()
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._stopped = False
        self.steps = 0
        self.thread = threading.Thread(target=self._loop, name="areal-embedded-scheduler", daemon=True)

    # -- thread-safe entry points ---------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self.thread.join(timeout=10)

    def submit(self, sequences: list[Sequence]) -> None:
        with self._wake:
            self._inbox.extend(sequences)
            self._wake.notify()

    def command(self, command: Command) -> concurrent.futures.Future:
        with self._wake:
            self._commands.append(command)
            self._wake.notify()
        return command.future

    def load(self) -> int:
        """Sequences submitted and not finished (inbox, waiting and running); a racy read, for
        admission control only."""
        return len(self._inbox) + len(self.waiting) + len(self.running)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self._stopped

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():  # the cache and all step tensors are inference tensors
            self._serve()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not (self._stopped or self._inbox or self._commands or self.running
                           or (self.waiting and self._admitting) or (self._exclusive and not self.running)):
                    self._wake.wait()
                if self._stopped:
                    break
                self.waiting.extend(self._inbox)
                self._inbox.clear()
                commands = list(self._commands)
                self._commands.clear()
            for command in commands:
                self._control(command)
            self._run_exclusive()
            try:
                if self._admitting:
                    self._admit()
                if self.running:
                    self._decode_step()
            except Exception as exc:  # fail the batch, keep serving
                log.exception("model step failed; failing %d running requests", len(self.running))
                for seq in self.running:
                    seq.on_done(exc)
                self.running.clear()
        for seq in self.running + list(self.waiting):
            seq.on_done(RuntimeError("server shutting down"))

    @property
    def _admitting(self) -> bool:
        return not self.paused and not self._exclusive and len(self.running) < self.max_batch

    def _control(self, command: Command) -> None:
        if command.exclusive:
            self._exclusive.append(command)
            return
        try:
            if command.kind == "pause":
                self._abort_where(lambda s: True, "paused: /pause_generation")
                self.paused = True
            elif command.kind == "continue":
                self.paused = False
            elif command.kind == "abort":
                matches = command.targets or (lambda s: True)
                self._abort_where(matches, "aborted: /abort_request")
                for seq in [s for s in self.waiting if matches(s)]:
                    self.waiting.remove(seq)
                    seq.finish = {"type": "abort", "message": "aborted: /abort_request"}
                    seq.on_done(seq.result())
            command.future.set_result(None)
        except Exception as exc:  # noqa: BLE001
            command.future.set_exception(exc)

    def _run_exclusive(self) -> None:
        while self._exclusive:
            command = self._exclusive[0]
            if self.running:
                if not command.abort_running:
                    return  # wait for the batch to drain
                self._abort_where(lambda s: True, f"aborted for {command.kind}")
            self._exclusive.popleft()
            try:
                if command.run is None:
                    raise ValueError(f"exclusive command {command.kind!r} has nothing to run")
                command.future.set_result(command.run())
            except Exception as exc:  # noqa: BLE001 - reported to the HTTP caller
                command.future.set_exception(exc)

    def _abort_where(self, predicate: Callable[[Sequence], bool], message: str) -> None:
        """Finish matching running sequences now with ``abort`` and their partial output."""
        for seq in self.running:
            if predicate(seq):
                seq.finish = {"type": "abort", "message": message}
        self._release_finished()

    # -- admission and steps ----------------------------------------------------------------------

    def _admit(self) -> None:
        """Prefill waiting sequences in one batch: the oldest, then later ones in queue order
        while rows are free and the padded batch stays within the prefill token budget and within
        ``PAD_LIMIT`` × its prompt tokens. A prompt that would break either limit waits for a
        later batch (its place in the queue kept), so prompts of very different lengths, such as
        interrupted requests resubmitted with their partial output, are not padded to the longest.

        The samples of one prompt (equal :attr:`Sequence.prefill_key`) share a single prefill:
        its cache row is copied to the others' rows and each samples its first token on its own.
        """
        batch: list[Sequence] = []
        later: list[Sequence] = []  # looked at, left for a later batch
        prompts: dict[tuple, int] = {}  # prefill_key -> index among the distinct prompts prefilled
        longest = prompt_tokens = 0
        free_rows = self.max_batch - len(self.running)
        for _ in range(min(len(self.waiting), ADMIT_SCAN)):
            if len(batch) >= free_rows:
                break
            seq = self.waiting.popleft()
            if seq.max_new_tokens <= 0:
                seq.version = self.version
                seq.finish = {"type": "length", "length": 0}
                seq.on_done(seq.result())
                continue
            if seq.prefill_key not in prompts:
                grown = max(longest, len(seq.prompt))
                padded = grown * (len(prompts) + 1)
                if batch and (padded > self.max_prefill_tokens or padded > PAD_LIMIT * (prompt_tokens + len(seq.prompt))):
                    later.append(seq)
                    continue
                prompts[seq.prefill_key] = len(prompts)
                longest, prompt_tokens = grown, prompt_tokens + len(seq.prompt)
            batch.append(seq)
        self.waiting.extendleft(reversed(later))
        if not batch:
            return
        row_start = len(self.running)
        leaders = {prompts[s.prefill_key]: s for s in reversed(batch)}  # first sample of each prompt
        ordered = [leaders[i] for i in range(len(prompts))]
        ordered += [s for s in batch if s is not leaders[prompts[s.prefill_key]]]
        source = [prompts[s.prefill_key] for s in ordered]
        try:
            prefilled = ordered[:len(prompts)]
            logits, starts, offsets = self.runner.prefill([s.prompt for s in prefilled], row_start,
                                                          [s.media for s in prefilled])
            for row in range(len(prompts), len(ordered)):
                n_slots = starts[source[row]] + len(ordered[row].prompt)
                self.runner.cache.move_row(row_start + source[row], row_start + row, n_slots)
            tokens, logprobs = sample(logits[source], self._sampling(ordered))
        except Exception as exc:  # these are in neither queue now: answer them here
            for seq in ordered:
                seq.on_done(exc)
            raise
        for seq, i, token, logprob in zip(ordered, source, tokens.tolist(), logprobs.tolist()):
            seq.start, seq.end, seq.version = starts[i], starts[i] + len(seq.prompt), self.version
            seq.position_offset = offsets[i]
            seq.record(token, logprob)
        self.running.extend(ordered)
        self._release_finished()

    def _decode_step(self) -> None:
        rows = self.running
        device = self.runner.device
        tokens = torch.tensor([s.output[-1] for s in rows], device=device)
        starts = torch.tensor([s.start for s in rows], device=device)
        ends = torch.tensor([s.end for s in rows], device=device)
        offsets = torch.tensor([s.position_offset for s in rows], device=device)
        logits = self.runner.decode(tokens, starts, ends, offsets)
        new_tokens, logprobs = sample(logits, self._sampling(rows))
        for seq, token, logprob in zip(rows, new_tokens.tolist(), logprobs.tolist()):
            seq.end += 1
            seq.record(token, logprob)
        self.steps += 1
        self._release_finished()

    def _sampling(self, rows: list[Sequence]) -> BatchSampling:
        device = self.runner.device
        return BatchSampling(
            temperature=torch.tensor([s.temperature for s in rows], device=device),
            top_k=torch.tensor([s.top_k for s in rows], device=device),
            top_p=torch.tensor([s.top_p for s in rows], device=device),
            uniforms=torch.tensor([s.rng.random() if s.temperature > 0 else 0.0 for s in rows],
                                  dtype=torch.float64, device=device),
        )

    def _release_finished(self) -> None:
        """Answer finished sequences and move the last rows into their places."""
        for row in range(len(self.running) - 1, -1, -1):
            seq = self.running[row]
            if seq.finish is None:
                continue
            last = len(self.running) - 1
            if row != last:
                moved = self.running[last]
                self.runner.cache.move_row(last, row, moved.end)
                self.running[row] = moved
            self.running.pop()
            seq.on_done(seq.result())
