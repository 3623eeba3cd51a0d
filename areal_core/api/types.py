"""Plain data passed between components. No torch here: these cross process and HTTP boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass
class SamplingParams:
    """How to sample one completion (SGLang ``sampling_params`` names)."""

    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if d["seed"] is None:
            d.pop("seed")
        return d


@dataclass
class ModelRequest:
    """One generation request: a prompt as token ids. ``rid`` keeps a trajectory on one server."""

    input_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    rid: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelResponse:
    """The completion of one request, possibly produced across several weight versions.

    ``output_logprobs[i]`` is the log-probability of ``output_ids[i]`` under the sampling
    distribution actually used; ``output_versions[i]`` the weight version that produced it.
    """

    input_ids: list[int]
    output_ids: list[int]
    output_logprobs: list[float]
    output_versions: list[int]
    finish_reason: FinishReason
    latency_s: float = 0.0
    n_interruptions: int = 0


@dataclass
class Trajectory:
    """One sample for training: prompt + completion tokens with per-token training data.

    All per-token lists have the same length L = len(input_ids). Prompt positions have
    ``loss_mask`` 0, ``logprobs`` 0.0 and ``versions`` -1. ``group_id`` ties the n samples of one
    prompt together (group-relative advantages need them in one batch).
    """

    input_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    versions: list[int]
    reward: float
    group_id: str = ""
    sample_id: str = ""  # which dataset sample this came from (recovery: never trained twice)
    finish_reason: str = "stop"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        for name in ("loss_mask", "logprobs", "versions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Trajectory.{name} has length {len(getattr(self, name))}, input_ids has {n}")

    @classmethod
    def from_response(cls, resp: ModelResponse, reward: float, **kw) -> "Trajectory":
        p, o = len(resp.input_ids), len(resp.output_ids)
        return cls(
            input_ids=list(resp.input_ids) + list(resp.output_ids),
            loss_mask=[0] * p + [1] * o,
            logprobs=[0.0] * p + list(resp.output_logprobs),
            versions=[-1] * p + list(resp.output_versions),
            reward=float(reward),
            finish_reason=resp.finish_reason,
            **kw,
        )


@dataclass
class WeightUpdateMeta:
    """How new weights reach the inference servers.

    ``type="disk"``: servers load a safetensors HF directory at ``path``.
    ``type="distributed"``: trainer rank 0 broadcasts over a process group (``group_name``)
    at ``master_address:master_port`` with ``world_size`` = 1 + total server ranks, in buckets of
    ``bucket_bytes``.
    """

    type: Literal["disk", "distributed"] = "disk"
    version: int = 0
    path: str = ""
    master_address: str = "127.0.0.1"
    master_port: int = 0
    group_name: str = "areal_weights"
    world_size: int = 0
    backend: str = "gloo"
    bucket_bytes: int = 1 << 30
