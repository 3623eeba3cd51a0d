"""Options of the ``ray`` scheduler (``scheduler: {name: ray, ...}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from areal_core.plugin import SchedulerConfigBase


class RaySchedulerConfig(SchedulerConfigBase):
    """Where the Ray cluster is and how a run's processes are placed on it."""

    name: str = Field("ray", description="registered name of the scheduler")
    address: str | None = Field(
        None, description="HOST:PORT of a running cluster's GCS (`ray start --head --port=PORT`); unset: start a "
                          "one-machine cluster for this run and stop it at the end")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the one-machine cluster (unset address only; unset: all)")
    cpus_per_server: float = Field(1.0, ge=0, description="Ray CPUs reserved for each inference server")
    cpus_per_trainer: float = Field(1.0, ge=0, description="Ray CPUs reserved for each trainer rank")
    device_resource: Literal["GPU"] | None = Field(
        None, description="reserve the allocation's devices as this Ray resource (GPU: t·p per server, 1 per rank); "
                          "unset: CPU-only run")
    server_resources: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per server, e.g. {inference_node: 1} to pin servers to "
                                          "nodes started with --resources='{\"inference_node\": 8}'")
    trainer_resources: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per trainer rank (same use as server_resources)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement-group strategy for the run's bundles")
    forward_env: list[str] = Field(
        default_factory=lambda: ["AREAL_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "WANDB_", "OMP_NUM_THREADS",
                                 "PYTHONPATH", "CUDA_LAUNCH_BLOCKING"],
        description="driver environment variables (names or prefixes) passed to every process")
    connect_timeout_s: float = Field(10.0, gt=0, description="give up reaching `address` after this long")
    placement_timeout_s: float = Field(60.0, gt=0, description="give up reserving the run's resources after this long")
    server_start_timeout_s: float = Field(300.0, gt=0, description="wait at most this long for a server's health")
    stop_timeout_s: float = Field(10.0, gt=0, description="after SIGTERM, wait this long before SIGKILL")
