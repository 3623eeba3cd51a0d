"""What keeps one client from taking the server down: authentication and transport limits.

* :class:`Guard` (ASGI middleware): every request needs ``Authorization: Bearer <key>`` when the
  server has a key (401 otherwise; the comparison is constant-time), and a body of at most
  ``max_body_bytes`` (413, from ``Content-Length`` or while the body streams in).
* :class:`GuardedH11Protocol` (uvicorn's HTTP/1.1 protocol, passed as ``http=``): at most
  ``max_connections`` open connections (a new one beyond that is closed at once), and a
  connection must deliver a complete request (headers and body) within ``request_timeout_s`` of
  opening or of its previous response, or it is closed. Idle keep-alive connections close after
  uvicorn's ``timeout_keep_alive``. A request being answered (a long ``/generate``) is never cut.

Header size is bounded by uvicorn's ``h11_max_incomplete_event_size``.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class TransportLimits:
    """Bounds on what one connection may hold (see module docstring)."""

    max_body_bytes: int = 64 << 20
    max_connections: int = 1024
    request_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_header_bytes: int = 64 << 10


class BodyTooLarge(Exception):
    """A request body over the limit (HTTP 413)."""


class Guard:
    """ASGI middleware: bearer-token check and body-size bound (see module docstring)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
            return await _reply(send, 401, "missing or wrong bearer token (Authorization: Bearer $AREAL_API_KEY)")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _reply(send, 413, f"request body over the server's limit of {self.max_body_bytes} bytes")
        received = 0
        started = False

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(f"request body over the server's limit of {self.max_body_bytes} bytes")
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body over the server's limit of {self.max_body_bytes} bytes")


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message}, "success": False, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(limits: TransportLimits) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with the connection cap and request deadline of ``limits``."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.close()
                return
            self._arm_request_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._answered = getattr(self, "_answered", 0) + 1
            self._arm_request_deadline()

        def _arm_request_deadline(self) -> None:
            self.loop.call_later(limits.request_timeout_s, self._request_deadline, getattr(self, "_answered", 0))

        def _request_deadline(self, answered_then: int) -> None:
            """Close the connection if the request it owed has not fully arrived by now. A request
            received in full (h11 state DONE: being answered) is left alone; an answer since the
            deadline was armed means a newer deadline covers the connection."""
            if self.transport.is_closing() or getattr(self, "_answered", 0) != answered_then:
                return
            if self.conn.their_state is not h11.DONE:
                self.transport.close()

    return GuardedH11Protocol
