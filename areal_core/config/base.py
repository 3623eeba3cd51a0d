"""Base models for config sections, and section validation with full field paths."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from areal_core.errors import ArealError


class StrictModel(BaseModel):
    """A config model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentConfig(StrictModel):
    """Base of every component's config model: ``name`` selects the component in the registry.

    A plugin's config model subclasses this and adds its own fields, each with a ``description``
    (it feeds ``areal config`` help and docs/config-reference.md).
    """

    name: str = Field(description="registered name of the component to use")


class InferenceConfigBase(ComponentConfig):
    """Base of an inference backend's config model: the fields core reads (``areal train``)."""

    n_servers: int = Field(1, ge=1, description="server processes the scheduler starts (requests are spread over them)")
    tensor_parallel_size: int = Field(
        1, ge=1, description="devices each server splits the model over by tensor parallelism (the t of the "
                             "allocation's inference part); > 1 only for a backend that supports it")
    pipeline_parallel_size: int = Field(
        1, ge=1, description="pipeline stages of each server (the p of the allocation's inference part); > 1 only for "
                             "a backend that supports it")
    expert_parallel_size: int = Field(
        1, ge=1, description="expert-parallel size of each server (the e of the allocation's inference part; needs a "
                             "model with experts); > 1 only for a backend that supports it")


class SchedulerConfigBase(ComponentConfig):
    """Base of a scheduler's config model: the fields core reads (``areal train``)."""

    trainer_ranks: int = Field(1, ge=1, description="trainer processes (data-parallel ranks); 1 runs inside `areal train`")
    allocation: str | None = Field(
        None, description="process layout, e.g. 'vllm:d2t2+fsdp:d4' (docs/cluster.md); unset: "
                          "INFERENCE:d{inference.n_servers}+ACTOR:d{trainer_ranks}")

    @field_validator("allocation")
    @classmethod
    def _allocation_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            from areal_core.config.allocation import parse_allocation

            try:
                parse_allocation(value)
            except ArealError as exc:
                raise ValueError(str(exc)) from None
        return value


class WorkflowConfigBase(ComponentConfig):
    """Base of a workflow's config model: the sampling fields core reconciles and overrides.

    The trainer sets the train engine's and the algorithm's temperature to ``temperature`` (the
    logprobs the servers return are under it) and evaluates with ``trainer.eval_temperature`` /
    ``trainer.eval_n_samples`` in their place. A workflow config that does not subclass this keeps
    its own sampling for evaluation, and the loss uses temperature 1.
    """

    temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy)")
    n_samples: int = Field(1, ge=1, description="completions per prompt (one group)")


def format_validation_error(exc: ValidationError, path: str = "") -> list[str]:
    """One line per error: ``full.field.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in ((path,) if path else ()) + tuple(err["loc"]))
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc or '<root>'}: {err['msg']}{shown}")
    return lines


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_section(model: type[ModelT], data: dict[str, Any], path: str) -> ModelT:
    """Validate one component section; raise ArealError listing every error with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ArealError("invalid config:\n  " + "\n  ".join(format_validation_error(exc, path))) from None
