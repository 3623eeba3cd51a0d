"""Sessions: one agent episode's calls, isolated behind its own API key.

A session is opened per episode (:meth:`SessionStore.open`) and gets a random key; every proxy
request carries it as ``Authorization: Bearer KEY`` and only ever sees that session. Each model
call is a :class:`CallRecord` (the exact tokens the model saw and produced). A session idle
longer than ``idle_timeout_s`` expires: it is closed, counted, and its episode fails.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from areal_core.plugin import ArealError


@dataclass
class CallRecord:
    """One model call: ``prompt_ids`` [P] + ``completion_ids`` [O] with O logprobs and versions.

    ``parent`` is the call whose full token sequence is a prefix of ``prompt_ids`` (the previous
    turn of the same conversation), or None. ``messages``/``message`` are the normalized request
    and answer, used to recognise the next turn.
    """

    call_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: str
    message: dict[str, Any]
    parent: str | None = None
    reward: float | None = None
    tool_call_errors: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)

    @property
    def full_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids


@dataclass
class Session:
    id: str
    api_key: str
    calls: list[CallRecord] = field(default_factory=list)
    last_active: float = field(default_factory=time.monotonic)
    closed: str | None = None  # None while open; else why it closed ("ended", "expired")
    in_flight: int = 0  # calls being generated (a session never expires during one)
    engine: Any = None  # the InferenceEngine of the episode that opened it (None: the proxy's default)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def call(self, call_id: str) -> CallRecord:
        for c in self.calls:
            if c.call_id == call_id:
                return c
        raise ArealError(f"session {self.id}: no call {call_id!r} (calls: {[c.call_id for c in self.calls]})")

    def set_reward(self, value: float, call_id: str | None = None) -> None:
        """Reward one call (default: the latest)."""
        if not self.calls:
            raise ArealError(f"session {self.id}: no call to reward yet")
        (self.call(call_id) if call_id else self.calls[-1]).reward = float(value)


class SessionStore:
    """Open sessions by id and by key. ``max_sessions`` bounds memory; ``idle_timeout_s`` expiry."""

    def __init__(self, idle_timeout_s: float = 600.0, max_sessions: int = 4096):
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_sessions = int(max_sessions)
        self._by_id: dict[str, Session] = {}
        self._by_key: dict[str, Session] = {}
        self.n_expired = 0

    def open(self) -> Session:
        self.expire_idle()
        if len(self._by_id) >= self.max_sessions:
            raise ArealError(f"agent proxy: {len(self._by_id)} sessions open (max_sessions={self.max_sessions}); "
                             "end sessions or raise the limit")
        s = Session(id="sess-" + uuid.uuid4().hex[:16], api_key="sk-areal-" + secrets.token_urlsafe(24))
        self._by_id[s.id] = s
        self._by_key[s.api_key] = s
        return s

    def by_key(self, key: str) -> Session | None:
        """The open session with this key, or None (unknown, ended or expired)."""
        self.expire_idle()
        s = self._by_key.get(key)
        return s if s is not None and s.closed is None else None

    def by_id(self, session_id: str) -> Session:
        s = self._by_id.get(session_id)
        if s is None:
            raise ArealError(f"agent proxy: no open session {session_id!r}")
        return s

    def close(self, session: Session, why: str = "ended") -> Session:
        if session.closed is None:
            session.closed = why
        self._by_id.pop(session.id, None)
        self._by_key.pop(session.api_key, None)
        return session

    def expire_idle(self) -> list[Session]:
        now = time.monotonic()
        stale = [s for s in self._by_id.values() if not s.in_flight and now - s.last_active > self.idle_timeout_s]
        for s in stale:
            self.close(s, "expired")
        self.n_expired += len(stale)
        return stale

    def sessions(self) -> list[Session]:
        """The open sessions (after expiring idle ones)."""
        self.expire_idle()
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
