"""The OpenAI-compatible proxy: a FastAPI app in front of an ``InferenceEngine``.

Endpoints (session key = ``Authorization: Bearer KEY`` or ``x-api-key: KEY``)::

    GET  /health                          no key
    GET  /v1/models                       session key
    POST /v1/chat/completions             session key   (areal_agent.api_chat)
    POST /v1/responses                    session key   (areal_agent.api_responses)
    POST /v1/messages                     session key   (areal_agent.api_messages: the Anthropic shape)
    POST /v1/rewards                      session key   {"reward": float, "call_id": optional}
    POST /admin/sessions                  admin key     -> {"session_id", "api_key"}
    GET  /admin/sessions                  admin key     -> [{"session_id", "n_calls", "idle_s"}]
    POST /admin/sessions/{id}/end         admin key     ?mode=individual|concat&gamma=1.0 -> {"trajectories"}

A missing or unknown key is 401 (an ended or expired session's key is unknown). Bodies over
``max_body_bytes`` are 413 before they are parsed; malformed JSON, unknown fields and bad values
are 400 naming the field; engine failures are 503. The server runs inside the event loop of the
caller (:class:`AgentProxy`), so generation shares the rollout client's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import time
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from areal_agent.api_chat import (
    ChatCompletionRequest,
    completion_events,
    completion_json,
)
from areal_agent.api_messages import MessagesRequest, message_events, message_json, stop_reason
from areal_agent.api_responses import ResponsesRequest, response_events, response_json
from areal_agent.chat import ChatModel
from areal_agent.export import ExportMode, export_calls
from areal_agent.session import Session, SessionStore
from areal_agent.streaming import TextStream
from areal_core.plugin import ArealError, InferenceEngine, InferenceUnavailableError, SamplingParams


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await _error(400, f"bad content-length header {declared!r}")(scope, receive, send)
        if declared is not None and int(declared) > self.limit:
            return await _error(413, f"request body of {int(declared)} bytes exceeds max_body_bytes={self.limit}")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"request body exceeds max_body_bytes={self.limit}")(scope, receive, send)


class _TooLarge(Exception):
    pass


class AgentProxy:
    """Sessions + chat model + engine behind HTTP. ``start()`` binds ``host:port`` (0 = any free
    port) and serves from the running event loop; ``base_url`` is then ``http://host:port/v1``."""

    def __init__(self, chat: ChatModel, store: SessionStore, defaults: SamplingParams, *, host: str = "127.0.0.1",
                 port: int = 0, admin_key: str | None = None, model_name: str = "areal",
                 max_body_bytes: int = 4 << 20):
        self.chat, self.store, self.defaults = chat, store, defaults
        self.host, self.bind_port, self.port = host, port, port
        self.admin_key = admin_key or "sk-areal-admin-" + secrets.token_urlsafe(24)
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.engine: InferenceEngine | None = None
        self._server: Any = None  # uvicorn.Server once started
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self, engine: InferenceEngine) -> str:
        """Serve with ``engine`` from the running event loop (idempotent there; a server left on an
        earlier, finished loop is dropped and a new one bound)."""
        self.engine = engine
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return self.base_url
        self._drop_socket()
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.bind_port))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None
        self._loop = loop
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None and self._loop is asyncio.get_running_loop():
            self._server.should_exit = True
            await self._task
        self._drop_socket()
        self._server = self._task = self._loop = None

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------------ the app
    def _engine_for(self, session) -> InferenceEngine:
        """The session's own engine, else the proxy's; an error when neither is set."""
        engine = session.engine or self.engine
        if engine is None:
            raise ArealError("agent proxy: no inference engine is attached (start it with an engine)")
        return engine

    def app(self):
        app = FastAPI(title="areal agent proxy", docs_url=None, redoc_url=None, openapi_url=None)

        @app.exception_handler(RequestValidationError)
        async def invalid(_req, exc: RequestValidationError):
            parts = []
            for e in exc.errors():
                loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
                parts.append(f"{loc or 'body'}: {e.get('msg')}")
            return _error(400, "; ".join(parts))

        @app.exception_handler(InferenceUnavailableError)
        async def unavailable(_req, exc):
            return _error(503, str(exc), "server_error")

        @app.exception_handler(ArealError)
        async def bad(_req, exc):
            return _error(400, str(exc))

        def key_of(request: Request) -> str:
            auth = request.headers.get("authorization", "")
            return auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")

        def session_of(request: Request) -> Session:
            session = self.store.by_key(key_of(request))
            if session is None:
                raise _Unauthorized("invalid or expired API key (each episode's session has its own key)")
            session.touch()
            return session

        def admin(request: Request) -> None:
            if not secrets.compare_digest(key_of(request).encode(), self.admin_key.encode()):
                raise _Unauthorized("this endpoint needs the proxy's admin key")

        @app.exception_handler(_Unauthorized)
        async def unauthorized(_req, exc):
            return _error(401, str(exc), "authentication_error")

        @app.get("/health")
        async def health():
            return {"status": "ok", "sessions": len(self.store)}

        @app.get("/v1/models")
        async def models(request: Request):
            session_of(request)
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "areal"}]}

        async def streamed(session: Session, req) -> TextStream:
            stream = TextStream(self.chat, self._engine_for(session), session, req)
            await stream.start()
            return stream

        @app.post("/v1/chat/completions")
        async def chat_completions(body: ChatCompletionRequest, request: Request):
            session = session_of(request)
            req, model = body.to_chat(self.defaults), body.model or self.model_name
            if body.stream:
                include_usage = bool((body.stream_options or {}).get("include_usage"))
                return StreamingResponse(completion_events(await streamed(session, req), model, include_usage),
                                         media_type="text/event-stream")
            return completion_json(await self.chat.complete(self._engine_for(session), session, req), model)

        @app.post("/v1/responses")
        async def responses(body: ResponsesRequest, request: Request):
            session = session_of(request)
            req, model = body.to_chat(self.defaults), body.model or self.model_name
            if body.stream:
                return StreamingResponse(response_events(await streamed(session, req), model), media_type="text/event-stream")
            (record,) = await self.chat.complete(self._engine_for(session), session, req)
            return response_json(record, model)

        @app.post("/v1/messages")
        async def messages(body: MessagesRequest, request: Request):
            session = session_of(request)
            req = body.to_chat(self.defaults)
            decode = self.chat.decode
            if body.stream:
                return StreamingResponse(message_events(await streamed(session, req), body.model, req.stop, decode),
                                         media_type="text/event-stream")
            (record,) = await self.chat.complete(self._engine_for(session), session, req)
            return message_json(record, body.model, stop_reason(record, req.stop, decode))

        @app.post("/v1/rewards")
        async def rewards(body: RewardBody, request: Request):
            session = session_of(request)
            session.set_reward(body.reward, body.call_id)
            return {"session_id": session.id, "call_id": body.call_id or session.calls[-1].call_id, "reward": body.reward}

        @app.post("/admin/sessions")
        async def open_session(request: Request):
            admin(request)
            s = self.store.open()
            return {"session_id": s.id, "api_key": s.api_key}

        @app.get("/admin/sessions")
        async def list_sessions(request: Request):
            admin(request)
            now = time.monotonic()
            return [{"session_id": s.id, "n_calls": len(s.calls), "idle_s": round(now - s.last_active, 3)}
                    for s in self.store.sessions()]

        @app.post("/admin/sessions/{session_id}/end")
        async def end_session(session_id: str, request: Request, mode: str = "individual", gamma: float = 1.0):
            admin(request)
            if mode not in ("individual", "concat"):
                raise ArealError(f"mode: {mode!r} is not one of ['individual', 'concat']")
            s = self.store.close(self.store.by_id(session_id))
            return {"session_id": s.id, "trajectories": [dataclasses.asdict(t) for t in export_calls(s.calls, cast(ExportMode, mode), gamma)]}

        return BodyLimit(app, self.max_body_bytes)


class _Unauthorized(Exception):
    pass


class RewardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward: float
    call_id: str | None = None
