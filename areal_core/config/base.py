"""Base models for config sections, and section validation with full field paths."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def format_validation_error(exc: ValidationError, path: str = "") -> list[str]:
    """One line per error: ``full.field.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in ((path,) if path else ()) + tuple(err["loc"]))
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc or '<root>'}: {err['msg']}{shown}")
    return lines


def validate_section(model: type[BaseModel], data: dict[str, Any], path: str) -> BaseModel:
    """Validate one component section; raise ArealError listing every error with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ArealError("invalid config:\n  " + "\n  ".join(format_validation_error(exc, path))) from None
