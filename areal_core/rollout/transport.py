"""The rollout client's HTTP transport: httpx's API on aiohttp's connection pool.

Workflows keep hundreds of generate requests in flight (n samples × concurrent rollouts, plus the
resubmitted rounds after each weight update). httpx's own pool (httpcore 1.0) rescans every pooled
connection each time a request starts or ends, so its bookkeeping grows with the square of the
requests in flight: in the quickstart it took ~45% of the trainer process's CPU, on the core the
trainer trains on. aiohttp's pool does the same work in constant time per request. httpx-aiohttp
adapts it to ``httpx.AsyncClient``, the client type every :class:`~areal_core.api.InferenceBackend`
receives, so backends are unchanged; ``benchmarks/bench_http_client.py`` measures both pools.

httpx-aiohttp 0.2 reports a refused connection as ``httpx.ConnectTimeout`` and a server that drops
the connection mid-request as ``ConnectTimeout`` too; :class:`PooledTransport` reports them as
``ConnectError`` and ``ReadError``, as httpx itself does, so failover messages say what happened.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class PooledTransport(AiohttpTransport):
    """``AiohttpTransport`` over an unbounded aiohttp pool whose idle connections close after
    ``keepalive_s`` (keep it below the servers' idle timeout: a request sent on a connection the
    server is closing fails)."""

    def __init__(self, keepalive_s: float):
        def session() -> aiohttp.ClientSession:  # made on first use, inside the running event loop
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_s))

        super().__init__(client=session)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(str(cause), request=request) from cause
            if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                raise httpx.ReadError(str(cause) or type(cause).__name__, request=request) from cause
            raise
