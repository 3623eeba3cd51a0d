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
    TrainEngine,
    Workflow,
)
from areal_core.api.types import ModelRequest, ModelResponse, SamplingParams, Trajectory, WeightUpdateMeta

__all__ = [
    "Algorithm", "Device", "InferenceBackend", "InferenceEngine", "LossFn", "LossWeightFn", "MetricSink",
    "ModelRequest", "ModelResponse", "Reward", "SamplingParams", "Scheduler", "TrainEngine", "Trajectory",
    "WeightUpdateMeta", "Workflow",
]
