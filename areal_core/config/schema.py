"""The run config: what ``areal train --config run.yaml`` reads.

Sections that select a component (``actor``, ``algorithm``, ``inference``, ``workflow``,
``reward``...) are typed ``Section[kind]``: a mapping with a ``name`` key. After the run config
itself validates, each such section is validated by the config model that the selected
component's plugin registered (see :func:`areal_core.config.loader.resolve_components`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from areal_core.config.base import StrictModel


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
    request_timeout_s: float = Field(600.0, gt=0, description="one HTTP generate call slower than this is retried on another server")
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
    eval_temperature: float = Field(0.0, ge=0, description="sampling temperature of evaluation episodes (0: greedy)")
    eval_n_samples: int = Field(1, ge=1, description="completions per held-out prompt in evaluation")
    log_rollouts_per_step: int = Field(4, ge=0, description="sampled trajectories per step written to "
                                       "RUN_DIR/rollouts.jsonl (prompt, completion, reward, versions); 0: none")
    verify_weight_sync: bool = Field(
        False, description="after every weight sync, compare a checksum of the trainer's weights with each server's "
                           "(needs a backend with weights_checksum, e.g. embedded)")


class MetricsConfig(StrictModel):
    """Where per-step metrics go. jsonl is always on."""

    sinks: list[Section("metric_sink")] = Field(default_factory=list, description="extra sinks, e.g. [{name: wandb}]")


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    json_logs: bool = Field(False, description="JSON lines instead of readable console output")


class RunConfig(StrictModel):
    """A whole RL run."""

    experiment_name: str = Field("areal", description="groups trials; part of the run directory")
    trial_name: str = Field("trial0", description="one run of an experiment")
    fileroot: str = Field("runs", description="run directories go under fileroot/experiment_name/trial_name")
    seed: int = Field(1, description="global seed")
    model_path: str = Field(description="local HF model directory (actor, reference and servers start from it)")
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


class SFTTrainerConfig(StrictModel):
    """The supervised fine-tuning loop (``areal sft``)."""

    total_steps: int = Field(100, ge=1, description="optimizer steps to run")
    batch_size: int = Field(64, ge=1, description="sequences per optimizer step (packed, split into micro-batches by the engine)")
    eval_every: int = Field(0, ge=0, description="held-out loss every K steps (0: only at the end); needs valid_dataset")
    log_every: int = Field(10, ge=1, description="a console line every K steps (metrics.jsonl gets every step)")


class SFTConfig(StrictModel):
    """A supervised fine-tuning run: packed next-token NLL on the completion tokens only.

    Rows hold ``prompt`` + ``completion`` text (field names configurable) or chat ``messages``
    whose last message is the assistant's answer. The fine-tuned model is exported as a Hugging
    Face directory to ``output_path`` (default ``RUN_DIR/export``), ready to be an RL run's
    ``model_path``.
    """

    experiment_name: str = Field("areal-sft", description="groups trials; part of the run directory")
    trial_name: str = Field("trial0", description="one run of an experiment")
    fileroot: str = Field("runs", description="run directories go under fileroot/experiment_name/trial_name")
    seed: int = Field(1, description="global seed (data order, engine RNG)")
    model_path: str = Field(description="local HF model directory to fine-tune")
    output_path: str | None = Field(None, description="where the fine-tuned HF model is written (default RUN_DIR/export)")

    actor: Section("train_engine") = Field(description="the train engine, e.g. {name: fsdp, optimizer: {lr: 1e-3}}")
    device: Section("device") = Field(default_factory=lambda: {"name": "cpu"}, description="cpu | cuda | npu...")
    train_dataset: DatasetConfig = Field(description="demonstrations to fine-tune on")
    valid_dataset: DatasetConfig | None = Field(None, description="held-out demonstrations for the eval loss")
    prompt_field: str = Field("prompt", description="row field holding the prompt text")
    completion_field: str = Field("completion", description="row field holding the target completion text")
    messages_field: str = Field("messages", description="row field with chat messages; the last one (assistant) is the target")
    chat_template: bool = Field(True, description="render the prompt as one user message with the tokenizer's chat "
                                                  "template (as the rlvr workflow does); false: raw text")
    trainer: SFTTrainerConfig = Field(default_factory=SFTTrainerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
