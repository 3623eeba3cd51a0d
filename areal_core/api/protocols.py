"""The typed contract of each component kind. Core calls components only through these.

Tensor shapes use B = sequences in a batch, T = total tokens of the batch packed end to end.
``SequenceBatch`` is :class:`areal_core.data.batch.SequenceBatch` (1-D packed tensors + cu_seqlens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Protocol, runtime_checkable

from areal_core.api.types import ModelRequest, ModelResponse, Trajectory, WeightUpdateMeta

if TYPE_CHECKING:  # torch is imported only by the modules that run models
    import torch

    from areal_core.data.batch import SequenceBatch

# loss_fn(logprobs [t], entropy [t], micro_batch) -> (loss summed over the micro-batch, stats)
# The engine divides the sum by the global loss weight (all micro-batches, all DP ranks).
LossFn = Callable[["torch.Tensor", "torch.Tensor", "SequenceBatch"], "tuple[torch.Tensor, dict[str, float]]"]
# loss_weight_fn(micro_batch) -> this micro-batch's share of the normaliser (e.g. its loss-token count)
LossWeightFn = Callable[["SequenceBatch"], float]


@runtime_checkable
class TrainEngine(Protocol):
    """Owns a model and its optimizer (sharded over data-parallel ranks).

    Every method is called on every trainer rank with the same global batch (SPMD); the engine
    splits it over its data-parallel ranks and into micro-batches by its token budget.
    """

    version: int  # weight version; +1 per optimizer step

    def initialize(self) -> None:
        """Load the model from its path, build the optimizer and LR schedule."""

    def forward(self, batch: "SequenceBatch", *, temperature: float = 1.0) -> "torch.Tensor":
        """No-grad forward. Returns [T]: logprob of ``input_ids[t]`` given tokens before it
        (0 at each sequence's first token); a critic returns values [T] instead."""

    def train_batch(self, batch: "SequenceBatch", loss_fn: LossFn, loss_weight_fn: LossWeightFn) -> dict[str, float]:
        """One optimizer step on ``batch``. Returns stats: loss, grad_norm, lr, and loss_fn's stats."""

    def save(self, path: str) -> None:
        """Write a recovery checkpoint (model, optimizer, scheduler, RNG) to directory ``path``."""

    def load(self, path: str) -> None:
        """Restore exactly what :meth:`save` wrote."""

    def export_hf(self, path: str) -> None:
        """Write a Hugging Face directory (safetensors, config, tokenizer) an inference server loads."""

    def named_full_weights(self) -> Iterator[tuple[str, "torch.Tensor"]]:
        """Full (unsharded) parameters in HF names; collective on every rank, yields on rank 0."""

    def destroy(self) -> None:
        """Release process groups and memory."""


@runtime_checkable
class InferenceEngine(Protocol):
    """What a workflow generates with: the rollout client (``areal_core.rollout.client``)."""

    async def agenerate(self, req: ModelRequest) -> ModelResponse:
        """Generate one completion, riding through weight updates (interruptions)."""

    def get_version(self) -> int:
        """The newest weight version the servers have."""


@runtime_checkable
class InferenceBackend(Protocol):
    """Launches inference servers and speaks their wire protocol.

    ``server_command`` gives the scheduler the command line of one server; the client uses the
    remaining methods to talk to a running server at ``addr`` ("host:port").
    """

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        """The argv that starts one server on ``host:port`` serving ``model_path``."""

    async def generate(self, client: Any, addr: str, req: ModelRequest) -> ModelResponse:
        """One request/response round trip; ``finish_reason == "abort"`` when paused mid-way.
        ``client`` is an ``httpx.AsyncClient`` shared by the caller."""

    async def pause(self, client: Any, addr: str) -> None:
        """Stop admitting requests; in-flight ones return their partial output with ``abort``."""

    async def resume(self, client: Any, addr: str) -> None:
        """Admit requests again."""

    async def update_weights(self, client: Any, addr: str, meta: WeightUpdateMeta) -> None:
        """Load new weights (disk path or process-group broadcast) and set the version."""

    async def health(self, client: Any, addr: str) -> bool:
        """True when the server answers and is ready."""


@runtime_checkable
class Algorithm(Protocol):
    """An RL algorithm: turns a batch of trajectories into one or more optimizer steps.

    ``train_step`` reads top to bottom in each algorithm module: recompute logprobs, compute
    advantages, run the (decoupled) PPO update over minibatches.
    """

    def keep_group(self, group: list[Trajectory]) -> bool:
        """Dynamic filtering: False drops the whole group (counted as rejected)."""

    def train_step(self, batch: "SequenceBatch", actor: TrainEngine, critic: TrainEngine | None = None,
                   ref: TrainEngine | None = None) -> dict[str, float]:
        """Update ``actor`` (and ``critic``) on ``batch``. Returns stats for logging."""


@runtime_checkable
class Reward(Protocol):
    """Scores one completion. May be sync or ``async``; the workflow runs sync ones off the loop."""

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float | Awaitable[float]:
        ...


@runtime_checkable
class Workflow(Protocol):
    """Runs one episode for one dataset sample and returns its trajectories (a group)."""

    async def run_episode(self, engine: InferenceEngine, sample: dict[str, Any]) -> list[Trajectory] | None:
        """None means the episode was rejected (not an error)."""


@runtime_checkable
class MetricSink(Protocol):
    """Receives per-step metrics."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Device(Protocol):
    """A device type: where tensors live and which collective backend connects ranks."""

    type: str  # torch device type, e.g. "cuda"
    comm_backend: str  # "nccl", "gloo", "hccl"

    def is_available(self) -> bool: ...

    def memory_stats(self) -> dict[str, float]: ...


@runtime_checkable
class Scheduler(Protocol):
    """Starts and stops the processes of a run."""

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None, count: int = 1) -> list[Any]:
        """Start ``count`` processes; returns handles."""

    def stop_all(self) -> None: ...


@runtime_checkable
class PairLoss(Protocol):
    """A preference-pair loss of ``areal dpo`` / ``areal rm`` (one value per pair).

    ``x_c`` and ``x_r`` [P] (float64) are what the chosen and the rejected sequence of each pair
    contribute: with ``input == "logprob"`` the log-ratio ``Σ_t log π_θ − Σ_t log π_ref`` over the
    completion tokens (``needs_reference``: π_ref from a frozen reference); with
    ``input == "score"`` the model's scalar score at the sequence's last token.
    """

    input: str  # "logprob" or "score"
    needs_reference: bool

    def __call__(self, x_c: "torch.Tensor", x_r: "torch.Tensor") -> "torch.Tensor":
        """Per-pair loss [P], differentiable in ``x_c`` and ``x_r``."""

    def rewards(self, x_c: "torch.Tensor", x_r: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
        """The (implicit) rewards [P] of chosen and rejected that metrics report (margin = difference)."""
