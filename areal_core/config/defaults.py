"""Check a config model's own defaults against its field types.

pydantic does not validate defaults: ``lr: float = Field("fast", ...)`` is accepted when the
class is defined and surfaces only when a run reads ``lr``. The registry calls
:func:`default_errors` when it loads a component's config model, so a wrongly typed default is
reported once, naming the plugin, the model and the field, before any run starts.
"""

from __future__ import annotations

import functools
import typing

from pydantic import BaseModel, ValidationError


@functools.cache
def default_errors(model: type[BaseModel]) -> tuple[str, ...]:
    """One line per field default (of ``model`` and the models nested in its fields) that the
    field's own type rejects: ``field.path: default 'fast' is invalid: <pydantic message>``."""
    return tuple(_errors(model, "", set()))


def _errors(model: type[BaseModel], prefix: str, seen: set[type]) -> list[str]:
    if model in seen:  # a model nested in itself: checked once
        return []
    seen.add(model)
    defaults = {}
    errors: list[str] = []
    for name, field in model.model_fields.items():
        for nested in _models_in(field.annotation):
            errors += _errors(nested, f"{prefix}{name}.", seen)
        if not field.is_required():
            defaults[field.alias or name] = field.get_default(call_default_factory=True)
    try:
        model.model_validate(defaults)
    except ValidationError as exc:
        # required fields are missing from `defaults` and model-level validators judge the
        # defaults together: only an error located at a defaulted field blames its default
        errors += [
            f"{prefix}{'.'.join(map(str, e['loc']))}: default {e['input']!r} is invalid: {e['msg']}"
            for e in exc.errors()
            if e["type"] != "missing" and e["loc"] and e["loc"][0] in defaults
        ]
    return errors


def _models_in(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation names, through Optional, unions, lists and dicts."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
