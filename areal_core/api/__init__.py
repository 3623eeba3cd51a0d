"""Typed contracts and plain data types for every component kind."""

from areal_core.api.protocols import (
    Algorithm,
    Device,
    InferenceBackend,
    InferenceEngine,
    LossFn,
    LossWeightFn,
    MetricSink,
    Reward,
    Scheduler,
    SupportsAclose,
    SupportsAdapterExport,
    SupportsCpuPinning,
    SupportsOptimizerStepCount,
    SupportsParallelLayout,
    SupportsServerStatus,
    SupportsStats,
    SupportsWeightsChecksum,
    TrainEngine,
    WeightUpdater,
    Workflow,
)
from areal_core.api.types import (
    FinishReason,
    ModelRequest,
    ModelResponse,
    ParallelLayout,
    RunContext,
    SamplingParams,
    Trajectory,
    WeightSyncPath,
    WeightUpdateMeta,
    WeightVersion,
)

__all__ = [
    "Algorithm", "Device", "FinishReason", "InferenceBackend", "InferenceEngine", "LossFn", "LossWeightFn", "MetricSink",
    "ModelRequest", "ModelResponse", "Reward", "RunContext", "SamplingParams", "Scheduler", "SupportsAclose", "SupportsServerStatus",
    "ParallelLayout", "SupportsParallelLayout",
    "SupportsAdapterExport", "SupportsCpuPinning", "SupportsOptimizerStepCount", "SupportsStats", "SupportsWeightsChecksum", "TrainEngine", "Trajectory",
    "WeightSyncPath", "WeightUpdateMeta", "WeightUpdater", "WeightVersion", "Workflow",
]
