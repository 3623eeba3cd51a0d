"""Plain data passed between components. No torch here: these cross process and HTTP boundaries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from areal_core.errors import ArealError

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
    """One generation request: a prompt as token ids. ``rid`` keeps a trajectory on one server.

    ``image_data``: the prompt's images, in the order of their placeholder tokens in
    ``input_ids``; each the base64 of an image file or a ``data:image/...;base64,`` URL
    (:mod:`areal_core.multimodal`; SGLang's name and format). ``input_ids`` already hold every
    image's placeholder tokens (as the model's processor expands them)."""

    input_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    rid: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    image_data: list[str] = field(default_factory=list)


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
    # the model inputs of the prompt's images beside input_ids (a processor's tensors, e.g.
    # pixel_values, image_grid_thw); {} for text. See areal_core.multimodal.
    multimodal_inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        for name in ("loss_mask", "logprobs", "versions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Trajectory.{name} has length {len(getattr(self, name))}, input_ids has {n}")

    @classmethod
    def from_response(cls, resp: ModelResponse, reward: float, **kw) -> Trajectory:
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


WeightSyncPath = Literal["disk", "distributed", "adapter"]


@dataclass
class WeightUpdateMeta:
    """How new weights reach the inference servers: what the trainer tells a backend when it asks
    for a :class:`~areal_core.api.WeightUpdater` (``InferenceBackend.weight_updater``).

    ``type="disk"``: servers load a safetensors HF directory the trainer exported.
    ``type="distributed"``: trainer rank 0 broadcasts over a process group (``group_name``)
    at ``master_address:master_port`` (``backend``: the device's comm backend, gloo/nccl/hccl),
    in buckets of ``bucket_bytes``.
    ``type="adapter"``: servers load a LoRA adapter directory (the base weights stay).
    ``timeout_s`` bounds each transfer call.
    """

    type: WeightSyncPath = "disk"
    version: int = 0
    path: str = ""
    master_address: str = "127.0.0.1"
    master_port: int = 0
    group_name: str = "areal_weights"
    world_size: int = 0
    backend: str = "gloo"
    bucket_bytes: int = 1 << 30
    timeout_s: float = 600.0


class WeightVersion:
    """The run's weight version, with one owner: the trainer.

    The trainer calls :meth:`set` once the servers serve new weights (version = completed steps);
    train engines, the rollout client and the staleness manager only read :attr:`value`. Readers
    that must react to a change (the rollout controller's admission) :meth:`subscribe`.
    Thread-safe: the trainer sets it while the rollout thread reads it.
    """

    def __init__(self, value: int = 0):
        self._value = int(value)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []

    @property
    def value(self) -> int:
        return self._value

    def set(self, value: int) -> None:
        """Set the version (the trainer only) and tell every subscriber."""
        with self._lock:
            self._value = int(value)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self._value)

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` after every :meth:`set`."""
        with self._lock:
            self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"WeightVersion({self._value})"


def parse_weight_version(value: Any, server: str = "inference server") -> int:
    """A server's reported weight version as an int (SGLang and vLLM report a string).

    ``None`` or ``"default"`` (the server's version was never set) is version 0; anything else
    must be an integer, since areal sets versions to the number of completed steps.
    """
    if value is None or value == "default":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ArealError(f"{server} reported weight_version {value!r}, which is not an integer: areal sets "
                         "integer versions (start servers with version 0; was it updated by another client?)") from None


@dataclass(frozen=True)
class ParallelLayout:
    """The parallel layout of one part of ``scheduler.allocation`` (``fsdp:d4``, ``vllm:d2t2``).

    ``data`` (d), ``tensor`` (t), ``pipeline`` (p), ``context`` (c) and ``expert`` (e) sizes, each
    ≥ 1. A train part runs ``world_size = d·t·p·c`` ranks; its ``e`` expert groups are carved out
    of the ``d·c`` data×context ranks. An inference part runs ``d`` servers of ``t·p`` devices.
    ``part`` is the allocation part it came from (``"actor=megatron:d2t2"``), for messages.
    """

    data: int = 1
    tensor: int = 1
    pipeline: int = 1
    context: int = 1
    expert: int = 1
    part: str = ""

    @property
    def world_size(self) -> int:
        """d·t·p·c (processes of a train part)."""
        return self.data * self.tensor * self.pipeline * self.context

    def model_parallel(self) -> dict[str, int]:
        """The dims beyond data parallel that are > 1, by letter: ``{"t": 2, "e": 4}``."""
        sizes = {"t": self.tensor, "p": self.pipeline, "c": self.context, "e": self.expert}
        return {k: v for k, v in sizes.items() if v > 1}


@dataclass
class RunContext:
    """What a train engine factory receives besides its config (``factory(config, run)``).

    ``weight_version`` is owned by the trainer (see :class:`WeightVersion`): an engine reads
    ``run.weight_version.value`` (e.g. the version of π_prox) and never sets it. ``rank`` /
    ``world_size`` are this trainer process's rank and the number of trainer processes;
    ``parallel`` is how they are split (the actor part of ``scheduler.allocation``; pure data
    parallel, ``d = world_size``, when the run has none). Only an engine that is
    :class:`~areal_core.api.protocols.SupportsParallelLayout` for every dim > 1 of it is built.
    ``device`` is the :class:`~areal_core.api.Device` the trainer ranks joined their process group
    with; an engine whose config says ``device: auto`` computes on it. ``total_steps`` counts the
    optimizer steps the run takes per engine (``trainer.total_steps`` × the algorithm's
    :class:`~areal_core.api.protocols.SupportsOptimizerStepCount`, 1 when it has none): the
    length of an LR schedule whose own ``total_steps`` is unset.
    """

    model_path: str
    seed: int
    total_steps: int
    run_dir: Path
    rank: int = 0
    world_size: int = 1
    weight_version: WeightVersion = field(default_factory=WeightVersion)
    parallel: ParallelLayout = field(default_factory=ParallelLayout)
    device: Any = None  # the run's Device (its ``device:`` section); None outside a run (an engine then picks one)

    def __post_init__(self) -> None:
        if self.parallel == ParallelLayout():  # the default: every process a data-parallel rank
            self.parallel = ParallelLayout(data=self.world_size)
        if self.parallel.world_size != self.world_size:
            raise ValueError(f"RunContext: layout {self.parallel} has {self.parallel.world_size} ranks, "
                             f"world_size is {self.world_size}")
