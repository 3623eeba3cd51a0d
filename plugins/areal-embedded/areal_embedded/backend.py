"""The ``embedded`` inference backend: launches areal's own server, talks SGLang's native protocol."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from areal_core.plugin import ArealError, InferenceConfigBase, WeightUpdateMeta, WeightUpdater
from areal_embedded.cpus import AUTO, auto_cpus
from areal_sglang.protocol import ServerRequestError, SGLangProtocol, post


class EmbeddedConfig(InferenceConfigBase):
    """Options of the embedded server (each becomes a command-line flag of ``areal_embedded.server``)."""

    max_batch: int = Field(32, ge=1, description="most sequences one server decodes together (continuous batching)")
    max_prefill_tokens: int = Field(8192, ge=1, description="padded prompt tokens per batched prefill")
    max_len: int | None = Field(None, ge=2, description="context length cap; default: the model's max_position_embeddings")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights and KV cache dtype; auto is float32 on CPU, bfloat16 on CUDA")
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:N")
    seed: int = Field(0, description="seeds the sampling of requests that carry no sampling_seed")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per server; default: torch's choice")
    cpus: Annotated[list[int], Field(min_length=1)] | Literal["auto"] | None = Field(
        None, description="CPU core ids every server process is pinned to (os.sched_setaffinity), e.g. [0] to keep "
                          "generation off the trainer's cores; auto: the first n_servers × threads (1 if unset) cores "
                          "this process may use, when at least one is left for the trainer; null: no pinning")
    weight_version: int = Field(0, ge=0, description="weight version the server reports before any update")
    log_level: Literal["debug", "info", "warning", "error"] = Field("warning", description="server log level")
    max_n: int = Field(64, ge=1, description="most completions one /generate may ask per prompt (sampling n)")
    max_new_tokens: int | None = Field(None, ge=1, description="largest max_new_tokens a request may ask; "
                                                               "default: the context length")
    max_waiting: int = Field(4096, ge=1, description="sequences queued or running beyond which a new request gets "
                                                     "HTTP 503 (the client retries it on another server)")
    max_body_mb: float = Field(64.0, gt=0, description="largest request body (HTTP 413 beyond)")
    max_connections: int = Field(1024, ge=1, description="open connections beyond which new ones are closed at once")
    request_timeout_s: float = Field(30.0, gt=0, description="a connection must deliver a whole request (headers and "
                                                             "body) within this time, or it is closed")


class EmbeddedBackend(SGLangProtocol):
    """Starts ``python -m areal_embedded.server``; generate/pause/resume/health and the weight
    updaters come from :class:`~areal_sglang.protocol.SGLangProtocol`.

    The server requires ``Authorization: Bearer $AREAL_API_KEY`` when that variable is set in its
    environment (``areal train`` sets a fresh one per run); the key never appears in its argv.

    Weight paths: SGLang's ``disk`` and ``distributed``, and ``adapter`` (:class:`EmbeddedAdapterUpdater`:
    only the LoRA adapter travels; the server merges it into the base weights it keeps).

    It also implements :class:`~areal_core.plugin.SupportsWeightsChecksum`: a server reports the
    checksum of the weights it serves (the trainer compares it with its own when
    ``trainer.verify_weight_sync`` is on).
    """

    def __init__(self, config: EmbeddedConfig | None = None):
        self.config = config or EmbeddedConfig(name="embedded")

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        c = self.config
        argv = [sys.executable, "-m", "areal_embedded.server", "--model", str(model_path), "--host", host,
                "--port", str(port), "--max-batch", str(c.max_batch), "--max-prefill-tokens", str(c.max_prefill_tokens),
                "--dtype", c.dtype, "--device", c.device, "--seed", str(c.seed),
                "--weight-version", str(c.weight_version), "--log-level", c.log_level]
        argv += ["--max-n", str(c.max_n), "--max-waiting", str(c.max_waiting), "--max-body-mb", str(c.max_body_mb),
                 "--max-connections", str(c.max_connections), "--request-timeout-s", str(c.request_timeout_s)]
        if c.max_new_tokens is not None:
            argv += ["--max-new-tokens", str(c.max_new_tokens)]
        if c.max_len is not None:
            argv += ["--max-len", str(c.max_len)]
        if c.threads is not None:
            argv += ["--threads", str(c.threads)]
        if isinstance(c.cpus, list):
            argv += ["--cpus", ",".join(str(cpu) for cpu in c.cpus)]
        elif c.cpus == AUTO:
            argv += ["--cpus", f"{AUTO}:{self.auto_core_count()}"]
        return argv

    def auto_core_count(self) -> int:
        """How many cores ``cpus: auto`` pins the servers to: one set of ``threads`` per server."""
        return self.config.n_servers * (self.config.threads or 1)

    def pinned_cpus(self) -> frozenset[int] | None:
        """``cpus``: the cores every server process is pinned to (:class:`~areal_core.plugin.SupportsCpuPinning`),
        ``auto`` resolved on this machine as the server resolves it on its own."""
        cpus = self.config.cpus
        if cpus == AUTO:
            resolved = auto_cpus(self.auto_core_count())
            return frozenset(resolved) if resolved is not None else None
        return frozenset(cpus) if isinstance(cpus, list) else None

    def weight_updater(self, meta: WeightUpdateMeta) -> WeightUpdater:
        """``adapter`` here; ``disk`` and ``distributed`` as SGLang's (:class:`SGLangProtocol`)."""
        if meta.type == "adapter":
            return EmbeddedAdapterUpdater(meta)
        return super().weight_updater(meta)

    async def weights_checksum(self, client, addr: str) -> str:
        """``GET /weights_checksum``: :func:`areal_core.checksum.tensors_checksum` of the served parameters."""
        resp = await client.get(f"http://{addr}/weights_checksum")
        if resp.status_code != 200:
            raise ServerRequestError(addr, "/weights_checksum", resp.status_code, resp.text[:1000])
        return resp.json()["checksum"]


class EmbeddedAdapterUpdater:
    """``adapter`` path: every server merges the PEFT adapter directory the trainer exported
    (``export_adapter``) into its base weights and takes the version in the same step
    (``POST /load_lora_adapter {"lora_name", "lora_path", "weight_version"}``). ``push`` returns
    the bytes of the adapter's weight files: what the sync moved instead of the whole model."""

    lora_name = "areal"

    def __init__(self, meta: WeightUpdateMeta):
        self.meta = meta

    async def connect(self, client: Any, addrs: list[str]) -> None:
        """Nothing to prepare: servers read the shared filesystem."""

    async def push(self, client: Any, addrs: list[str], weights: Any, version: int) -> int:
        if not isinstance(weights, str) or not Path(weights, "adapter_config.json").is_file():
            raise ArealError(f"adapter weight update needs a PEFT adapter directory with adapter_config.json "
                             f"(what export_adapter writes); got {weights!r}")
        body = {"lora_name": self.lora_name, "lora_path": weights, "weight_version": str(version)}
        await asyncio.gather(*(post(client, addr, "/load_lora_adapter", body, timeout=self.meta.timeout_s)
                               for addr in addrs))
        return sum(f.stat().st_size for f in Path(weights).glob("*.safetensors"))

    async def close(self, client: Any) -> None:
        """Nothing to release (the adapter stays merged: it is the served policy)."""
