"""The ``vllm`` inference backend: launches ``vllm.entrypoints.openai.api_server`` and talks to it.

Generation is one ``/v1/completions`` call per round (see :mod:`areal_vllm.protocol`). Pause is
``POST /pause?mode=abort``: in-flight requests return their partial tokens with finish reason
``abort`` and new ones wait until ``POST /resume``; areal's interruptible client then submits
prompt + partial tokens again, under the new weights.

**Per-token versions.** ``/v1/completions`` does not say which weights produced a completion, so
:meth:`VLLMBackend.generate` reads the server's weight version (``GET /weight_info``, committed
by the weight updaters with ``/update_weight_version``) before and after the call. Equal: every
token is that version (weights change only while the server is paused, which aborts the
request). Different: the weights changed around this call and its tokens cannot be attributed,
so it is reported as interrupted with no tokens and the client submits it again.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from areal_core.plugin import (
    ArealError,
    ModelRequest,
    ModelResponse,
    WeightUpdateMeta,
    WeightUpdater,
    parse_weight_version,
)
from areal_vllm.config import VLLMConfig
from areal_vllm.preflight import check_vllm
from areal_vllm.protocol import (
    ServerRequestError,
    completion_payload,
    parse_completion,
    request,
)

if TYPE_CHECKING:
    import httpx


async def weight_version(client: httpx.AsyncClient, addr: str) -> int:
    """The weight version the server at ``addr`` serves (``GET /weight_info``)."""
    return parse_weight_version((await request(client, addr, "GET", "/weight_info"))["weight_version"], "vLLM server")


class VLLMBackend:
    """Starts vLLM servers; generate / pause / resume / health / weight updaters speak their API.

    Keeps, per server, the model name requests go to: the base model, or the LoRA adapter
    ``config.lora_name`` once an adapter update loaded it (looked up in ``GET /v1/models`` whenever
    the server's weight version changes). Runs the t and p of its allocation part
    (``--tensor-parallel-size``, ``--pipeline-parallel-size``).
    """

    parallel_dims = frozenset("tp")

    def __init__(self, config: VLLMConfig | None = None):
        self.config = config or VLLMConfig(name="vllm")
        self._served: dict[str, tuple[int, str]] = {}  # addr -> (weight version, model name)

    # ------------------------------------------------------------------ launch
    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        """``env VAR=... PYTHON -m vllm.entrypoints.openai.api_server --model PATH ...``.

        Raises ArealError before any process starts when ``config.python`` has no vLLM, or an
        older release than the one whose endpoints areal drives.
        """
        c = self.config
        python = c.python or sys.executable
        check_vllm(python)
        env = {
            "VLLM_SERVER_DEV_MODE": "1",  # /pause, /resume, /weight_info, /collective_rpc, ...
            "VLLM_HOST_IP": c.host_ip,
            "VLLM_CPU_KVCACHE_SPACE": str(c.kv_cache_space_gib),
            "VLLM_LOGGING_LEVEL": c.log_level.upper(),
            "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": str(c.keep_alive_s),
        }
        if c.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if c.cpu_threads_bind:
            env |= {"VLLM_CPU_OMP_THREADS_BIND": c.cpu_threads_bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
        env |= c.extra_env
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), python, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model_path), "--host", host, "--port", str(port), "--dtype", c.dtype,
                "--seed", str(c.seed), "--logprobs-mode", "processed_logprobs",
                "--uvicorn-log-level", c.log_level]
        if c.tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(c.tensor_parallel_size)]
        if c.pipeline_parallel_size > 1:
            argv += ["--pipeline-parallel-size", str(c.pipeline_parallel_size)]
        if c.enforce_eager:
            argv.append("--enforce-eager")
        if c.max_model_len is not None:
            argv += ["--max-model-len", str(c.max_model_len)]
        if c.max_num_seqs is not None:
            argv += ["--max-num-seqs", str(c.max_num_seqs)]
        if c.enable_lora:
            argv += ["--enable-lora", "--max-lora-rank", str(c.max_lora_rank)]
        return argv + list(c.extra_args)

    # ------------------------------------------------------------------ wire
    async def generate(self, client: httpx.AsyncClient, addr: str, req: ModelRequest) -> ModelResponse:
        """One ``/v1/completions`` round; ``finish_reason == "abort"`` when paused mid-way (partial
        tokens kept) or when the weights changed around the call (no tokens, see module doc)."""
        if not req.input_ids:
            raise ArealError("ModelRequest.input_ids is empty: a prompt needs at least one token")
        start = time.perf_counter()
        version = await weight_version(client, addr)
        model = await self._model_name(client, addr, version)
        data = await request(client, addr, "POST", "/v1/completions", body=completion_payload(model, req))
        if await weight_version(client, addr) != version:
            return ModelResponse(list(req.input_ids), [], [], [], "abort", time.perf_counter() - start)
        return parse_completion(req, data, version, time.perf_counter() - start)

    async def _model_name(self, client: httpx.AsyncClient, addr: str, version: int) -> str:
        cached = self._served.get(addr)
        if cached is not None and cached[0] == version:
            return cached[1]
        models = (await request(client, addr, "GET", "/v1/models"))["data"]
        names = {m["id"] for m in models}
        base = next(m["id"] for m in models if not m.get("parent"))
        name = self.config.lora_name if self.config.enable_lora and self.config.lora_name in names else base
        self._served[addr] = (version, name)
        return name

    async def pause(self, client: httpx.AsyncClient, addr: str) -> None:
        """Abort in-flight requests (they return partial tokens) and hold new ones until resume."""
        await request(client, addr, "POST", "/pause", params={"mode": "abort"})

    async def resume(self, client: httpx.AsyncClient, addr: str) -> None:
        await request(client, addr, "POST", "/resume")

    async def health(self, client: httpx.AsyncClient, addr: str) -> bool:
        """True when ``GET /health`` answers 200; False when it errors or cannot be reached."""
        import httpx

        try:
            await request(client, addr, "GET", "/health")
        except (httpx.HTTPError, ServerRequestError):
            return False
        return True

    # ------------------------------------------------------------------ weights
    def weight_updater(self, meta: WeightUpdateMeta) -> WeightUpdater:
        """``disk`` (``/collective_rpc`` reload_weights) and ``adapter`` (``/v1/load_lora_adapter``).

        ``distributed`` is refused: vLLM's weight-transfer engine (``/init_weight_transfer_engine``,
        ``/update_weights``) moves tensors over NCCL or CUDA IPC, GPU-only, and areal-vllm does not
        drive it; ``disk`` works on CPU and GPU alike.
        """
        from areal_vllm.updaters import VLLMAdapterUpdater, VLLMDiskUpdater

        if meta.type == "disk":
            return VLLMDiskUpdater(meta)
        if meta.type == "adapter":
            if not self.config.enable_lora:
                raise ArealError("weight_sync.type='adapter' needs inference.enable_lora=true (the vLLM server must "
                                 "start with --enable-lora to load adapters)")
            return VLLMAdapterUpdater(meta, self.config.lora_name)
        if meta.type == "distributed":
            raise ArealError("weight_sync.type='distributed' is not available with inference.name=vllm: vLLM's "
                             "weight-transfer endpoints broadcast over NCCL / CUDA IPC (GPU-only) and areal-vllm does "
                             "not drive them; use weight_sync.type='disk' (CPU and GPU) or 'adapter' (LoRA)")
        raise ArealError(f"weight_sync.type={meta.type!r} is not one of 'disk', 'adapter' for inference.name=vllm")
