"""The run config: what ``areal train --config run.yaml`` reads.

Sections that select a component (``actor``, ``algorithm``, ``inference``, ``workflow``,
``reward``...) are typed ``Section[kind]``: a mapping with a ``name`` key. After the run config
itself validates, each such section is validated by the config model that the selected
component's plugin registered (see :func:`areal_core.config.loader.resolve_components`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from areal_core.config.base import StrictModel


def _confined_name(value: str) -> str:
    """A run-directory component: one path segment, so fileroot/experiment/trial stays inside fileroot."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise ValueError(f"{value!r} must be a single directory name (no '/', '\\', '..', or surrounding spaces): "
                         f"the run directory must stay inside fileroot")
    return value


RunName = Annotated[str, AfterValidator(_confined_name)]


class ComponentKind:
    """Marks a config field as a component section of ``kind`` (validated by the plugin's model)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"ComponentKind({self.kind!r})"


def Section(kind: str):  # noqa: N802 - reads like a type in field annotations
    return Annotated[dict[str, Any], ComponentKind(kind)]


class RolloutConfig(StrictModel):
    """Rollout controller: concurrency and staleness control (DESIGN.md §2)."""

    max_head_offpolicyness: int = Field(2, ge=0, description="η: max weight versions a trained sample may lag; 0 = synchronous RL")
    max_concurrent_rollouts: int = Field(64, ge=1, description="episodes generating at once")
    batch_size: int = Field(8, ge=1, description="B: episodes (prompt groups) per training step")
    group_failure: Literal["drop", "retry"] = Field("drop", description="what happens to a group when one member's episode fails")
    max_retries: int = Field(1, ge=0, description="retries of a failed episode when group_failure=retry")
    reward_timeout_s: float = Field(30.0, gt=0, description="a reward call slower than this fails its sample")
    reward_max_threads: int = Field(
        16, ge=1, description="synchronous reward calls running at once; a hung call holds its thread until it "
                              "returns, so hung calls never take more threads than this")
    reward_failure_window: int = Field(64, ge=1, description="reward calls over which the failure share is measured")
    reward_max_failure_share: float = Field(
        0.5, ge=0, le=1, description="stop the run when more than this share of the last reward_failure_window "
                                     "reward calls failed (raised, timed out, returned a non-number); 1 = never")
    reward_max_abs: float = Field(1e6, gt=0, description="a reward whose magnitude exceeds this fails its sample "
                                                         "(keeps advantages and metrics finite)")
    loop_lag_warn_s: float = Field(
        5.0, gt=0, description="report (with the stack of the code holding it) when the rollout event loop is "
                               "blocked for longer than this, e.g. by a synchronous call inside an async reward")
    request_timeout_s: float = Field(600.0, gt=0, description="one HTTP generate call slower than this is retried on another server")
    control_timeout_s: float = Field(
        60.0, gt=0, description="deadline of a pause, resume or health call to one server (they take milliseconds on "
                                "CPU and seconds on a loaded GPU server); a server that misses it is probed, then lost")
    weight_update_timeout_s: float = Field(
        1800.0, gt=0, description="deadline of one weight push to all servers (loading a large checkpoint from disk on "
                                  "GPUs can take minutes; a tiny CPU model takes under a second)")
    on_server_lost: Literal["restart", "continue", "stop"] = Field(
        "restart", description="a server that stops answering (killed, stopped, hung): restart = the scheduler starts "
                               "it again at the current weights (schedulers with restart_server: local, ray, slurm; "
                               "else as continue); continue = go on "
                               "with the others; stop = end the run naming it. distributed weight sync always stops")
    enforce_token_lag: bool = Field(
        False, description="strict staleness: a finished group holding any token more than η versions older than the "
                           "weights it would train is generated again instead (admission alone bounds the lag of a "
                           "group's newest token; tokens of generations interrupted by updates can be older)")


class WeightSyncConfig(StrictModel):
    """How new weights reach the inference servers after every step."""

    type: Literal["disk", "distributed", "adapter"] = Field(
        "disk", description="disk: safetensors dir; distributed: process-group broadcast; adapter: only the LoRA "
                            "adapter (needs a LoRA actor and a backend with an adapter path)")
    bucket_mb: int = Field(1024, ge=1, description="broadcast bucket size (distributed)")


class DatasetConfig(StrictModel):
    """A local dataset (JSONL / parquet / a `datasets` directory)."""

    path: str = Field(description="local file or directory")
    split: str | None = Field(None, description="split name inside a datasets directory")
    shuffle: bool = Field(True, description="shuffle each epoch (seeded)")
    max_samples: int | None = Field(None, ge=1, description="use only the first N samples")


class TrainerConfig(StrictModel):
    """The RL loop."""

    total_steps: int = Field(10, ge=1, description="training steps to run")
    eval_every: int = Field(0, ge=0, description="evaluate on the valid dataset every K steps (0: only at start and end)")
    save_every: int = Field(0, ge=0, description="write an HF export every K steps (0: only at the end)")
    checkpoint_every: int = Field(1, ge=0, description="write a recovery checkpoint every K steps (0: never)")
    keep_checkpoints: int = Field(2, ge=1, description="recovery checkpoints kept (the newest K); recovery falls back "
                                                       "to an older one when the newest is unreadable")
    eval_temperature: float = Field(0.0, ge=0, description="sampling temperature of evaluation episodes (0: greedy)")
    eval_n_samples: int = Field(1, ge=1, description="completions per held-out prompt in evaluation")
    log_rollouts_per_step: int = Field(4, ge=0, description="sampled trajectories per step written to "
                                       "RUN_DIR/rollouts.jsonl (prompt, completion, reward, versions); 0: none")
    verify_weight_sync: bool = Field(
        False, description="after every weight sync, compare a checksum of the trainer's weights with each server's "
                           "(needs a backend with weights_checksum, e.g. embedded); a difference fails the run, a "
                           "server that does not answer is logged and left to rollout.on_server_lost")
    torch_threads: int | None = Field(
        None, ge=1, description="torch CPU (intra-op) threads of each trainer rank; null: the cores this process may "
                                "run on minus those pinned to inference servers on this machine (embedded "
                                "inference.cpus), or torch's default (one per core) when no server is pinned or "
                                "the run is synchronous (η = 0: servers idle while the trainer trains)")


class MetricsConfig(StrictModel):
    """Where per-step metrics go. jsonl is always on."""

    sinks: list[Section("metric_sink")] = Field(default_factory=list, description="extra sinks, e.g. [{name: wandb}]")


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    json_logs: bool = Field(False, description="JSON lines instead of readable console output")


class RunConfig(StrictModel):
    """A whole RL run."""

    experiment_name: RunName = Field("areal", description="groups trials; part of the run directory")
    trial_name: RunName = Field("trial0", description="one run of an experiment")
    fileroot: str = Field("runs", description="run directories go under fileroot/experiment_name/trial_name")
    seed: int = Field(1, description="global seed")
    model_path: str = Field(description="local HF model directory or Hugging Face hub id (org/name, from the HF cache; downloaded unless HF_HUB_OFFLINE) that actor, reference and servers start from")
    recover: Literal["off", "auto"] = Field("off", description="auto: resume from the last recovery checkpoint if there is one")

    actor: Section("train_engine") = Field(description="the policy's train engine, e.g. {name: fsdp, optimizer: {lr: 1e-5}}")
    critic: Section("train_engine") | None = Field(None, description="value model engine (PPO)")
    ref: Section("train_engine") | None = Field(None, description="reference model engine (KL penalty)")
    algorithm: Section("algorithm") = Field(description="e.g. {name: grpo, eps_clip: 0.2}")
    inference: Section("inference_backend") = Field(description="e.g. {name: embedded, n_servers: 1}")
    workflow: Section("workflow") = Field(description="e.g. {name: rlvr, n_samples: 4}")
    reward: Section("reward") = Field(description="e.g. {name: countdown}")
    scheduler: Section("scheduler") = Field(default_factory=lambda: {"name": "local"}, description="process launcher")
    device: Section("device") = Field(default_factory=lambda: {"name": "cpu"}, description="cpu | cuda | npu...")

    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    train_dataset: DatasetConfig = Field(description="prompts to train on")
    valid_dataset: DatasetConfig | None = Field(None, description="held-out prompts to evaluate on")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


class OfflineTrainerConfig(StrictModel):
    """The offline loop shared by ``areal sft``, ``areal dpo`` and ``areal rm``."""

    total_steps: int = Field(100, ge=1, description="optimizer steps to run")
    batch_size: int = Field(64, ge=1, description="rows per optimizer step (SFT: sequences; DPO/RM: pairs), packed and "
                                                  "split into micro-batches and over ranks by the engine")
    eval_every: int = Field(0, ge=0, description="held-out eval every K steps (0: only at the end); needs valid_dataset")
    log_every: int = Field(10, ge=1, description="a console line every K steps (metrics.jsonl gets every step)")
    checkpoint_every: int = Field(0, ge=0, description="write a recovery checkpoint every K steps and at the end "
                                                       "(0: never); recover=auto resumes from the last one")
    ranks: int = Field(1, ge=1, description="data-parallel trainer processes on this machine (torchrun-style "
                                            "environment; the engine shards over them)")


class OfflineRunConfig(StrictModel):
    """What every offline run has: paths, the trained engine, data, the loop."""

    experiment_name: RunName = Field("areal-offline", description="groups trials; part of the run directory")
    trial_name: RunName = Field("trial0", description="one run of an experiment")
    fileroot: str = Field("runs", description="run directories go under fileroot/experiment_name/trial_name")
    seed: int = Field(1, description="global seed (data order, engine RNG)")
    model_path: str = Field(description="local HF model directory or Hugging Face hub id (org/name, from the HF cache) to train")
    output_path: str | None = Field(None, description="where the trained HF model is written (default RUN_DIR/export)")
    recover: Literal["off", "auto"] = Field("off", description="auto: resume from the last recovery checkpoint if there is one")

    actor: Section("train_engine") = Field(description="the train engine, e.g. {name: fsdp, optimizer: {lr: 1e-3}}")
    device: Section("device") = Field(default_factory=lambda: {"name": "cpu"}, description="cpu | cuda | npu...")
    train_dataset: DatasetConfig = Field(description="rows to train on")
    valid_dataset: DatasetConfig | None = Field(None, description="held-out rows for the eval metrics")
    chat_template: bool = Field(True, description="render a text prompt as one user message with the tokenizer's chat "
                                                  "template (as the rlvr workflow does); false: raw text")
    trainer: OfflineTrainerConfig = Field(default_factory=OfflineTrainerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


class SFTConfig(OfflineRunConfig):
    """A supervised fine-tuning run: packed next-token NLL on the assistant tokens only.

    Rows hold ``prompt`` + ``completion`` text (field names configurable) or chat ``messages``;
    every assistant message of a conversation is a target (loss on its content and the eos that
    ends it), everything else is context. The fine-tuned model is exported as a Hugging Face
    directory to ``output_path`` (default ``RUN_DIR/export``), ready to be an RL run's ``model_path``.
    """

    experiment_name: str = Field("areal-sft", description="groups trials; part of the run directory")
    prompt_field: str = Field("prompt", description="row field holding the prompt text")
    completion_field: str = Field("completion", description="row field holding the target completion text")
    messages_field: str = Field("messages", description="row field with chat messages; every assistant message is a target")


class PairConfig(OfflineRunConfig):
    """A preference-pair run (``areal dpo`` / ``areal rm``).

    Rows hold a prompt and a chosen and a rejected answer, each as text or as chat messages (see
    :mod:`areal_core.data.preference`). The ``loss`` (a registered pair loss) says what a sequence
    contributes: its completion log-ratio to a frozen reference (DPO, IPO) or its last-token
    score (Bradley–Terry, with a value-head engine such as ``{name: fsdp, critic: true}``).
    """

    ref: Section("train_engine") | None = Field(
        None, description="frozen reference engine (losses with a reference); unset: the actor's own initial weights, "
                          "evaluated once before training")
    loss: Section("pair_loss") = Field(default_factory=lambda: {"name": "dpo"}, description="e.g. {name: dpo, beta: 0.1}")
    prompt_field: str = Field("prompt", description="row field holding the prompt (text or messages)")
    chosen_field: str = Field("chosen", description="row field holding the preferred answer (text, a message, or messages)")
    rejected_field: str = Field("rejected", description="row field holding the dispreferred answer")


class DPOConfig(PairConfig):
    """``areal dpo``: direct preference optimisation of a causal LM against a frozen reference."""

    experiment_name: str = Field("areal-dpo", description="groups trials; part of the run directory")


class RMConfig(PairConfig):
    """``areal rm``: a reward model (scalar score at the last token) trained on preference pairs."""

    experiment_name: str = Field("areal-rm", description="groups trials; part of the run directory")
    loss: Section("pair_loss") = Field(default_factory=lambda: {"name": "bradley_terry"},
                                       description="e.g. {name: bradley_terry}")
