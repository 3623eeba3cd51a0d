"""The wire format areal speaks with a vLLM server (OpenAI-compatible API plus its RL endpoints).

One request is one ``/v1/completions`` call with a token-id prompt::

    POST /v1/completions {"model": str, "prompt": [int], "max_tokens": int, "temperature": float,
                          "top_p": float, "top_k": int, "seed": int, "stop_token_ids": [int],
                          "ignore_eos": bool, "logprobs": 0, "return_token_ids": true}
      -> {"choices": [{"token_ids": [int], "logprobs": {"token_logprobs": [float]},
                       "finish_reason": "stop" | "length" | "abort" | "repetition"}]}

The server runs with ``--logprobs-mode processed_logprobs``, so a logprob is that of the token
under the distribution it was sampled from (after temperature, top-p, top-k).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from areal_core.plugin import ArealError, FinishReason, ModelRequest, ModelResponse, get_logger

if TYPE_CHECKING:
    import httpx

log = get_logger(__name__)

# vLLM's finish reasons -> areal's. "repetition" is vLLM's repetition detector ending the
# sequence, a normal stop for the trainer.
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "repetition": "stop"}


class ServerRequestError(ArealError):
    """A vLLM server answered with an error status."""

    def __init__(self, addr: str, method: str, endpoint: str, status_code: int, detail: str, hint: str = ""):
        self.addr, self.endpoint, self.status_code, self.detail = addr, endpoint, status_code, detail
        super().__init__(f"vLLM server {addr} rejected {method} {endpoint} (HTTP {status_code}): {detail}"
                         + (f"\n{hint}" if hint else ""))


def _hint(endpoint: str, status_code: int) -> str:
    """What a 404 on an endpoint areal needs means."""
    if status_code != 404:
        return ""
    if endpoint.startswith("/v1/") and "lora" in endpoint:
        return ("the server has no runtime LoRA endpoints: it needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
                "--enable-lora (set inference.enable_lora=true; areal's server_command sets the variable)")
    if not endpoint.startswith("/v1/"):
        return ("the server has no RL endpoints: they need VLLM_SERVER_DEV_MODE=1 (areal's server_command sets it) "
                "and vLLM >= 0.32")
    return ""


# A connection the server reset or closed under a request, while the server itself still answers:
# seen on loaded machines (a LoRA run stopped on it twice, the server's log clean, the next
# requests fine). The call is sent again on a fresh connection, at most this many times.
RESET_RETRIES = 2


async def request(client: httpx.AsyncClient, addr: str, method: str, endpoint: str, *,
                  body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  timeout: float | None = None) -> Any:
    """One call; the decoded JSON body (None when empty). Non-200 raises :class:`ServerRequestError`.

    A reset connection (``httpx.ReadError``, ``WriteError``, ``RemoteProtocolError``) is retried up to
    :data:`RESET_RETRIES` times; a server that cannot be connected to fails at once (``ConnectError``),
    so failover to another server is not delayed. Retrying a ``/v1/completions`` call is safe: a
    completion the server had started is simply generated again.
    """
    import httpx

    attempt = 0
    while True:
        try:
            return await _request_once(client, addr, method, endpoint, body, params, timeout)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            attempt += 1
            if attempt > RESET_RETRIES:
                raise
            log.warning("vLLM connection reset; sending the request again", addr=addr, endpoint=endpoint,
                        error=f"{type(exc).__name__}: {exc}", cause=repr(exc.__context__), attempt=attempt)


async def _request_once(client: httpx.AsyncClient, addr: str, method: str, endpoint: str,
                        body: dict[str, Any] | None, params: dict[str, Any] | None, timeout: float | None) -> Any:
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs["json"] = body
    if params is not None:
        kwargs["params"] = params
    if timeout is not None:
        kwargs["timeout"] = timeout
    resp = await client.request(method, f"http://{addr}{endpoint}", **kwargs)
    if resp.status_code != 200:
        raise ServerRequestError(addr, method, endpoint, resp.status_code, resp.text[:1000],
                                 _hint(endpoint, resp.status_code))
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return resp.text


def completion_payload(model: str, req: ModelRequest) -> dict[str, Any]:
    """The ``/v1/completions`` body for one request (token-id prompt, one logprob per token)."""
    s = req.sampling
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(req.input_ids),
        "max_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "stop_token_ids": list(s.stop_token_ids),
        "ignore_eos": s.ignore_eos,
        "logprobs": 0,
        "return_token_ids": True,
    }
    if s.top_k > 0:
        body["top_k"] = s.top_k
    if s.seed is not None:
        body["seed"] = s.seed
    return body


def parse_completion(req: ModelRequest, data: Any, version: int, latency_s: float) -> ModelResponse:
    """Map one ``/v1/completions`` answer to a :class:`ModelResponse` whose tokens all have ``version``."""
    try:
        (choice,) = data["choices"]
        output_ids = [int(t) for t in choice.get("token_ids") or []]
        logprobs = choice.get("logprobs") or {}
        token_logprobs = [float(x) for x in logprobs.get("token_logprobs") or []]
        finish = choice["finish_reason"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArealError(f"/v1/completions answer lacks {exc} (is return_token_ids supported?): {str(data)[:300]}") from None
    if len(output_ids) != len(token_logprobs):
        raise ArealError(f"/v1/completions returned {len(output_ids)} token ids but {len(token_logprobs)} logprobs")
    if finish not in FINISH_REASONS:
        raise ArealError(f"/v1/completions returned finish_reason {finish!r}; areal maps {sorted(FINISH_REASONS)}")
    return ModelResponse(input_ids=list(req.input_ids), output_ids=output_ids, output_logprobs=token_logprobs,
                         output_versions=[version] * len(output_ids),
                         finish_reason=cast(FinishReason, FINISH_REASONS[finish]),
                         latency_s=latency_s)
