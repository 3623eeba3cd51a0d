"""Generate docs/config-reference.md from the config models (``areal config docs``).

Every row comes from a pydantic field: its dotted path, type (with range constraints), default
and ``description``. The run config is documented field by field; each component section by the
config model that the component's record names. The committed reference covers areal-core and
its built-in components; ``areal config docs --installed`` adds every installed plugin.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from areal_core.config.loader import ENV_PREFIX, unwrap_annotation
from areal_core.config.schema import ComponentKind, RunConfig
from areal_core.errors import ArealError
from areal_core.registry import KINDS, Registry

HEADER = """\
# Config reference

<!-- Generated from the config models by `areal config docs`; edit the models' field
     descriptions, not this file. -->

A run is configured by one YAML file plus overrides; see [write-a-plugin](write-a-plugin.md) for
how a plugin adds its own section. Precedence, lowest to highest:

    model defaults < YAML file (--config) < AREAL_* environment variables < command-line overrides

* YAML: `areal train --config run.yaml`. YAML 1.2 scalars: `off` is a string, `1e-5` a float.
* Environment: `{prefix}ROLLOUT__BATCH_SIZE=4` sets `rollout.batch_size` (`__` between levels).
* Overrides: `rollout.batch_size=4 actor.optimizer.lr=1e-5 metrics.sinks=[{{name: wandb}}]`;
  values are YAML, except for string fields, which keep the text as written.
* Unknown keys are errors. Every error is reported at once with its field path and source.
* `areal config show --config run.yaml [overrides]` prints the resolved config; every run saves
  it as `RUN_DIR/config.yaml`.

A *component section* (type `<kind> section`) selects a component by `name` and is then
validated by the config model that component registered (listed under
[Components](#components)); `areal plugins` lists the installed names.
"""


def render_config_reference(registry: Registry, model: type[BaseModel] = RunConfig) -> str:
    out = [HEADER.format(prefix=ENV_PREFIX), "## Run config\n"]
    out += _model_tables(model, "")
    out.append("## Components\n")
    out.append("A section selects a component with `name`; its other keys are that component's options, listed\n"
               "relative to the section (`n_samples` under `workflow:` is `workflow.n_samples`).\n")
    for kind in KINDS.values():
        records = registry.by_kind(kind.name)
        if not records:
            continue
        out.append(f"### {kind.label}s (`{kind.name}`)\n")
        for record in records:
            out.append(f"#### `{record.name}`\n")
            out.append(f"{record.summary} — from {record.distribution or '?'}.\n")
            try:
                config_model = record.load_config_model()
            except ArealError as exc:
                out.append(f"Config model not importable: {exc}\n")
                continue
            out += _model_tables(config_model, "", skip=("name",), empty="No options besides `name`.\n")
    return "\n".join(out).rstrip() + "\n"


def _model_tables(model: type[BaseModel], prefix: str, skip: tuple[str, ...] = (), empty: str = "") -> list[str]:
    """A table of ``model``'s own fields, then one per nested model field (depth first)."""
    rows, nested = [], []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        annotation = info.annotation
        sub = _nested_model(annotation)
        if sub is not None:
            nested.append((path, sub, info))
        description = info.description or (_first_line(sub.__doc__) if sub is not None else "")
        rows.append(f"| `{path}` | {_type_name(annotation, info.metadata)} | {_default(info)} | {_cell(description)} |")
    if not rows:
        return [empty] if empty else []
    title = f"`{prefix.rstrip('.')}` — " if prefix else ""
    doc = _first_line(model.__doc__)
    out = [f"**{title}{model.__name__}**" + (f": {doc}" if doc else "") + "\n"]
    out += ["| field | type | default | description |", "|---|---|---|---|", *rows, ""]
    for path, sub, _ in nested:
        out += _model_tables(sub, path + ".")
    return out


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    annotation, _ = unwrap_annotation(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _nested_model(members[0]) if len(members) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type_name(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    text = _type_text(annotation)
    for meta in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                text += f", {sign} {getattr(meta, attr)}"
        if isinstance(meta, ComponentKind):
            text = f"{meta.kind} section"
    return text.replace("|", "\\|")


def _type_text(annotation: Any) -> str:
    annotation, kind = unwrap_annotation(annotation)
    if kind is not None:
        return f"{kind} section"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (list, tuple, set, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(info) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see below)"
    if value is PydanticUndefined:
        return ""
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")
