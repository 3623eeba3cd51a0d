"""The typed contract of each component kind. Core calls components only through these.

Tensor shapes use B = sequences in a batch, T = total tokens of the batch packed end to end.
``SequenceBatch`` is :class:`areal_core.data.batch.SequenceBatch` (1-D packed tensors + cu_seqlens).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from areal_core.api.types import ModelRequest, ModelResponse, RunContext, Trajectory, WeightUpdateMeta

if TYPE_CHECKING:  # torch is imported only by the modules that run models
    from pathlib import Path

    import torch

    from areal_core.data.batch import SequenceBatch

# loss_fn(logprobs [t], entropy [t], micro_batch) -> (loss summed over the micro-batch, stats)
# (a critic engine passes values [t] and entropy None, hence Any)
# The engine divides the sum by the global loss weight (all micro-batches, all DP ranks).
LossFn = Callable[["torch.Tensor", Any, "SequenceBatch"], "tuple[torch.Tensor, dict[str, float]]"]
# loss_weight_fn(micro_batch) -> this micro-batch's share of the normaliser (e.g. its loss-token count)
LossWeightFn = Callable[["SequenceBatch"], float]


@runtime_checkable
class TrainEngine(Protocol):
    """Owns a model and its optimizer (sharded over data-parallel ranks).

    Every method is called on every trainer rank with the same global batch (SPMD); the engine
    splits it over its data-parallel ranks and into micro-batches by its token budget.
    """

    run: RunContext  # what the factory was given; ``run.weight_version.value`` is read-only here

    def initialize(self) -> None:
        """Load the model from its path, build the optimizer and LR schedule."""

    def forward(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        """No-grad forward. Returns [T]: logprob of ``input_ids[t]`` given tokens before it
        (0 at each sequence's first token); a critic returns values [T] instead."""

    def train_batch(self, batch: SequenceBatch, loss_fn: LossFn, loss_weight_fn: LossWeightFn) -> dict[str, float]:
        """One optimizer step on ``batch``. Returns stats: loss, grad_norm, lr, and loss_fn's stats."""

    def save(self, path: str) -> None:
        """Write a recovery checkpoint (model, optimizer, scheduler, RNG) to directory ``path``."""

    def load(self, path: str) -> None:
        """Restore exactly what :meth:`save` wrote."""

    def export_hf(self, path: str) -> None:
        """Write a Hugging Face directory (safetensors, config, tokenizer) an inference server loads."""

    def named_full_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
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
    """Launches inference servers and speaks their wire protocol (which lives in the plugin).

    ``server_command`` gives the scheduler the command line of one server; the rollout client uses
    ``generate``/``pause``/``resume``/``health`` to talk to a running server at ``addr``
    ("host:port"); the trainer moves weights through the :class:`WeightUpdater` that
    ``weight_updater`` returns. ``client`` is an ``httpx.AsyncClient`` owned by the caller.
    """

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        """The argv that starts one server on ``host:port`` serving ``model_path``."""

    async def generate(self, client: Any, addr: str, req: ModelRequest) -> ModelResponse:
        """One request/response round trip; ``finish_reason == "abort"`` when paused mid-way."""

    async def pause(self, client: Any, addr: str) -> None:
        """Stop admitting requests; in-flight ones return their partial output with ``abort``."""

    async def resume(self, client: Any, addr: str) -> None:
        """Admit requests again."""

    async def health(self, client: Any, addr: str) -> bool:
        """True when the server answers and is ready."""

    def weight_updater(self, meta: WeightUpdateMeta) -> WeightUpdater:
        """The object that carries new weights to this backend's servers over path ``meta.type``
        (``disk``, ``distributed`` or ``adapter``). Raises ArealError naming the path when this
        backend has no such path (the trainer asks once, before the first step)."""


@runtime_checkable
class WeightUpdater(Protocol):
    """One weight-transfer path to a set of servers, built by the backend, driven by trainer rank 0.

    The trainer calls ``connect`` once (and again for a restarted server), then per step, with
    generation paused: ``push(client, addrs, weights, version)`` where ``weights`` is

    ============ ==================================================================================
    meta.type    ``weights``
    ============ ==================================================================================
    disk         ``str``: an HF directory the actor wrote with ``TrainEngine.export_hf``
    distributed  iterator of ``(HF name, full tensor)`` from ``TrainEngine.named_full_weights``
    adapter      ``str``: a PEFT adapter directory from ``SupportsAdapterExport.export_adapter``
    ============ ==================================================================================

    ``push`` returns once every server serves the new weights as ``version`` (the backend's wire
    protocol commits the version); it returns the bytes it sent (or the bytes of the files loaded).
    """

    async def connect(self, client: Any, addrs: list[str]) -> None:
        """Prepare the path to these servers (e.g. form the broadcast process group)."""

    async def push(self, client: Any, addrs: list[str], weights: str | Iterable[tuple[str, torch.Tensor]],
                   version: int) -> int:
        """Make every server at ``addrs`` serve ``weights`` as weight version ``version``."""

    async def close(self, client: Any) -> None:
        """Release what ``connect`` made (process groups, stores)."""


# ---- optional capabilities: core checks them with isinstance, never with getattr ----------------


@runtime_checkable
class SupportsWeightsChecksum(Protocol):
    """A backend that reports a checksum of a server's weights (``trainer.verify_weight_sync``);
    equal to :func:`areal_core.checksum.tensors_checksum` of the same HF-named tensors."""

    async def weights_checksum(self, client: Any, addr: str) -> str: ...


@runtime_checkable
class SupportsCpuPinning(Protocol):
    """An inference backend whose servers can be pinned to CPU cores: the trainer leaves those
    cores to them when it picks its own torch thread count (``trainer.torch_threads`` unset)."""

    def pinned_cpus(self) -> frozenset[int] | None:
        """The core ids every server process is pinned to on its host; None when not pinned."""


@runtime_checkable
class SupportsAdapterExport(Protocol):
    """A train engine that can write only its LoRA adapter (``weight_sync.type=adapter``)."""

    def export_adapter(self, path: str) -> None:
        """Write a PEFT adapter directory (``adapter_config.json`` + safetensors) to ``path``;
        collective on every rank, written by rank 0."""


@runtime_checkable
class SupportsStats(Protocol):
    """An inference engine (or client) with counters worth logging per step."""

    def stats(self) -> dict[str, float]: ...


@runtime_checkable
class SupportsServerStatus(Protocol):
    """A scheduler that can say what became of an inference server it started (for errors and
    lost-server logs) and start it again (``rollout.on_server_lost=restart``)."""

    def describe_server(self, addr: str) -> str:
        """Its address, pid, whether it exited (status), was killed (signal), is stopped or
        running, and the end of its log when it is not running."""

    def restart_server(self, addr: str) -> None:
        """Start it again at the same address (killing what is left of it); return once it is
        healthy, serving the weights it was first started with."""


@runtime_checkable
class SupportsParallelLayout(Protocol):
    """A train engine or inference backend that runs model-parallel layouts.

    ``parallel_dims`` holds the letters of ``scheduler.allocation`` it honours beyond data
    parallel (a subset of ``"tpce"``: tensor, pipeline, context, expert). Core refuses a part with
    any other dim > 1 before the component starts (a train engine: after its factory call, before
    ``initialize``; an inference backend: before any server starts). A train engine reads its
    layout from ``run.parallel``; an inference backend from its config's
    ``tensor_parallel_size`` / ``pipeline_parallel_size`` / ``expert_parallel_size``.
    """

    parallel_dims: frozenset[str]


@runtime_checkable
class SupportsAclose(Protocol):
    """Something holding connections that must be closed on its own event loop."""

    async def aclose(self) -> None: ...


@runtime_checkable
class Algorithm(Protocol):
    """An RL algorithm: turns a batch of trajectories into one or more optimizer steps.

    ``train_step`` reads top to bottom in each algorithm module: recompute logprobs, compute
    advantages, run the (decoupled) PPO update over minibatches.
    """

    def keep_group(self, group: list[Trajectory]) -> bool:
        """Dynamic filtering: False drops the whole group (counted as rejected)."""

    def train_step(self, batch: SequenceBatch, actor: TrainEngine, critic: TrainEngine | None = None,
                   ref: TrainEngine | None = None) -> dict[str, float]:
        """Update ``actor`` (and ``critic``) on ``batch``. Returns stats for logging."""


@runtime_checkable
class SupportsOptimizerStepCount(Protocol):
    """An algorithm whose ``train_step`` takes a fixed number of optimizer steps per engine (e.g. PPO's
    ``ppo_epochs × n_minibatches``). Core multiplies ``trainer.total_steps`` by it for
    :attr:`~areal_core.api.types.RunContext.total_steps`, so an engine's LR schedule spans the run
    when its ``optimizer.total_steps`` is unset; an algorithm without it counts as one per step."""

    def optimizer_steps_per_train_step(self) -> int: ...


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
    """A device type: where tensors live and which collective backend connects ranks.

    Train engines take everything device-specific from here (which torch device a rank uses, the
    process group's backend, the device RNG a checkpoint saves, freeing cached memory), so a new
    accelerator plugs in as a device plugin without editing core or an engine."""

    type: str  # torch device type, e.g. "cuda"
    comm_backend: str  # "nccl", "gloo", "hccl"

    def is_available(self) -> bool: ...

    def memory_stats(self) -> dict[str, float]: ...

    def torch_device(self, local_rank: int) -> torch.device:
        """The device the process with node-local rank ``local_rank`` computes on, made this
        process's current device (e.g. ``torch.cuda.set_device``)."""

    def rng_state(self) -> Any:
        """Picklable state of this device type's random generators (what a recovery checkpoint
        saves beside torch's CPU generator); None when it has none of its own."""

    def set_rng_state(self, state: Any) -> None:
        """Restore what :meth:`rng_state` returned (None: nothing to restore)."""

    def empty_cache(self) -> None:
        """Give cached, unused memory back to the device (a no-op where nothing is cached)."""


@runtime_checkable
class Scheduler(Protocol):
    """Starts, watches and stops the processes of a run (``areal train`` calls exactly these).

    Used as a context manager: leaving it (success, error, Ctrl-C) stops every process it started.
    ``config`` is the scheduler's config section (a
    :class:`~areal_core.config.base.SchedulerConfigBase` carries ``trainer_ranks``).
    """

    config: Any

    def prepare(self, run_dir: Path) -> None:
        """Called first: where logs go (``run_dir/logs``); check the cluster can hold the run
        (raise ArealError before any process starts)."""

    def start_inference_servers(self, backend: InferenceBackend, model_path: str, n: int,
                                env: dict[str, str] | None = None) -> list[str]:
        """Start ``n`` servers with ``backend.server_command`` and wait until each is healthy.
        Returns their ``host:port`` addresses, reachable from the trainer."""

    def launch_trainers(self, argv: list[str], ranks: int, env: dict[str, str]) -> list[Any]:
        """Start ``ranks`` trainer processes running ``argv``, each with ``env`` plus the
        torchrun-style ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``
        and ``AREAL_HOST_ADDR`` (the address servers reach that process's node at). Returns handles."""

    def host_addr(self) -> str:
        """The address at which inference servers reach the driver's node (trainer rank 0 when it
        runs inside the driver); ``127.0.0.1`` on one machine."""

    def wait(self, handles: list[Any]) -> None:
        """Block until every handle exits; raise ArealError naming a process that failed (and
        its log tail), or a server that died meanwhile."""

    def stop_all(self) -> None:
        """Stop every process this scheduler started (idempotent)."""

    def __enter__(self) -> Scheduler: ...

    def __exit__(self, *exc: object) -> None: ...


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

    def __call__(self, x_c: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
        """Per-pair loss [P], differentiable in ``x_c`` and ``x_r``."""

    def rewards(self, x_c: torch.Tensor, x_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (implicit) rewards [P] of chosen and rejected that metrics report (margin = difference)."""


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a ``typing.Protocol`` class requires (``__call__`` included;
    ``__enter__``/``__exit__`` when it declares them)."""
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False) or klass.__name__ in ("Protocol", "Generic"):
            continue
        names += list(getattr(klass, "__annotations__", {}))
        names += [n for n, v in vars(klass).items()
                  if callable(v) and (not n.startswith("_") or n in ("__call__", "__enter__", "__exit__"))]
    return sorted(set(names))


def missing_members(obj: object, protocol: type) -> list[str]:
    """What ``obj`` lacks of ``protocol`` (empty when it has every member)."""
    return [m for m in protocol_members(protocol) if not hasattr(obj, m)]
