"""Load a run config: YAML file + ``AREAL_…`` environment variables + dotted overrides.

Precedence, lowest to highest (a later layer wins key by key; mappings merge deeply)::

    model defaults  <  YAML file (--config)  <  AREAL_* environment  <  command-line overrides

* Environment: ``AREAL_ROLLOUT__BATCH_SIZE=4`` means ``rollout.batch_size=4`` (prefix ``AREAL_``,
  ``__`` between levels, case-insensitive; read through pydantic-settings' env source). Variables
  that name no top-level field (``AREAL_DEBUG``, ``AREAL_LOG_JSON``) are not config.
* Overrides: ``actor.optimizer.lr=1e-5``, ``metrics.sinks=[{name: wandb}]``,
  ``metrics.sinks.0.project=demo``. The value is read as YAML (1.2 scalars, lists, mappings),
  except that a field typed as a string keeps the text as written (``trial_name=007``).

Validation runs in two passes and reports every error of both at once, each with its full field
path and where the value came from (file:line, env var, or override):

1. the run model (:class:`~areal_core.config.schema.RunConfig`): types, ranges, unknown keys;
2. every section marked ``ComponentKind`` (``actor``, ``algorithm``, ``metrics.sinks.0``...):
   its ``name`` is looked up in the registry and the section validated by the config model that
   the component's plugin registered. An unknown name gets the registry's message (available
   names, closest match, package to install, plugins that failed to load).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, overload

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource

from areal_core.config.base import ComponentConfig, format_validation_error
from areal_core.config.schema import ComponentKind, RunConfig
from areal_core.config.yamlio import dump_yaml, parse_value, read_yaml_file
from areal_core.errors import ArealError
from areal_core.registry import KINDS, Registry, get_registry

ENV_PREFIX = "AREAL_"
ENV_NESTED_DELIMITER = "__"
RESOLVED_CONFIG_FILE = "config.yaml"

Loc = tuple  # a location in nested config data: keys (str) and list indices (int)


class ConfigError(ArealError):
    """Every problem found in a config; ``errors`` holds one ``path: message`` line each."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        body = "\n  ".join(e.replace("\n", "\n    ") for e in errors)
        super().__init__(f"invalid config ({len(errors)} error{'s' if len(errors) != 1 else ''}):\n  {body}")


RunT = TypeVar("RunT", bound=BaseModel)


@dataclass
class ResolvedConfig(Generic[RunT]):
    """A validated run config with every component section validated by its plugin's model.

    ``run``: the run model instance, typed by the model loaded (``RunConfig``, ``SFTConfig``...);
    component sections in it are the raw mappings.
    ``components``: validated component configs by dotted field path (``"actor"``,
    ``"metrics.sinks.0"``); ``kinds``: the component kind of each of those paths.
    """

    run: RunT
    components: dict[str, ComponentConfig] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[ComponentConfig]:
        """The validated sections of one kind, in field order (e.g. every metric sink)."""
        return [c for p, c in self.components.items() if self.kinds[p] == kind]

    def create(self, path: str, registry: Registry | None = None, **deps):
        """Build the component configured at ``path``: ``registry.create(kind, name, config, **deps)``."""
        if path not in self.components:
            raise ArealError(f"no component section at {path!r}; configured: {', '.join(self.components) or '(none)'}")
        cfg = self.components[path]
        return (registry or get_registry()).create(self.kinds[path], cfg.name, cfg, **deps)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the run model dumped, each component section replaced by its full config."""
        data = self.run.model_dump(mode="json")
        for path, cfg in self.components.items():
            _set_at(data, _split_path(path), cfg.model_dump(mode="json"))
        return data

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


@overload
def load_config(
    model: type[RunT],
    config_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    env_prefix: str | None = ENV_PREFIX,
    registry: Registry | None = None,
) -> ResolvedConfig[RunT]: ...


@overload
def load_config(
    *,
    config_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    env_prefix: str | None = ENV_PREFIX,
    registry: Registry | None = None,
) -> ResolvedConfig[RunConfig]: ...


def load_config(
    model: type[BaseModel] = RunConfig,
    config_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    env_prefix: str | None = ENV_PREFIX,
    registry: Registry | None = None,
) -> ResolvedConfig[Any]:
    """Merge the layers, validate both passes, and return the resolved config.

    ``env_prefix=None`` ignores the environment. Raises :class:`ConfigError` listing every error,
    or ArealError for a file that cannot be read or parsed.
    """
    registry = registry or get_registry()
    data: dict[str, Any] = {}
    origins: dict[Loc, str] = {}
    text_values: dict[Loc, str] = {}  # values given as text (env, overrides), still as given
    errors: list[str] = []

    def set_text(loc: Loc, raw: str) -> None:
        """Type ``raw`` by the field at ``loc`` as known so far, and set it."""
        _seed_default_sections(model, data, loc)
        _set_at(data, loc, coerce_text(raw, _annotation_at(model, loc, data, registry)))
        for other in [k for k in text_values if k[: len(loc)] == loc or loc[: len(k)] == k]:
            del text_values[other]  # replaced by, or modified through, this value
        text_values[loc] = raw

    if config_path is not None:
        file_data, lines = read_yaml_file(config_path)
        _deep_merge(data, file_data)
        origins.update({loc: f"{config_path}:{line}" for loc, line in lines.items()})

    if env_prefix:
        # pydantic-settings types settings_cls as BaseSettings; it reads only model_fields and model_config
        source = _RawEnvSource(model, env_prefix=env_prefix,  # type: ignore[arg-type]
                               env_nested_delimiter=ENV_NESTED_DELIMITER, case_sensitive=False)
        for loc, raw in _leaves(source()):
            loc = tuple(int(p) if p.isdigit() else p for p in loc)
            try:
                set_text(loc, raw)
            except ArealError as exc:
                errors.append(str(exc))
                continue
            origins[loc] = "env " + env_prefix + ENV_NESTED_DELIMITER.join(str(p) for p in loc).upper()

    for override in overrides:
        try:
            loc, raw = parse_override(override)
            set_text(loc, raw)
        except ArealError as exc:
            errors.append(str(exc))
            continue
        origins[loc] = f"override {override!r}"

    # A later layer may have changed a section's `name`, and so the model that types its keys.
    for loc, raw in text_values.items():
        _set_at(data, loc, coerce_text(raw, _annotation_at(model, loc, data, registry)))

    run = None
    try:
        run = model.model_validate(data)
    except ValidationError as exc:
        errors += _with_origins(exc, "", origins)

    components: dict[str, ComponentConfig] = {}
    kinds: dict[str, str] = {}
    for loc, kind, section in _find_sections(model, data, ()):
        cfg = _validate_component(kind, section, loc, origins, registry, errors)
        if cfg is not None:
            dotted = _join(loc)
            components[dotted] = cfg
            kinds[dotted] = kind

    if errors or run is None:
        raise ConfigError(errors)
    return ResolvedConfig(run=run, components=components, kinds=kinds)


def save_resolved(cfg: ResolvedConfig[Any], run_dir: str | Path) -> Path:
    """Write ``run_dir/config.yaml``: the resolved config, loadable again with ``--config``."""
    path = Path(run_dir) / RESOLVED_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# resolved config of this run (defaults, file, env and overrides applied)\n" + cfg.to_yaml(), encoding="utf-8")
    return path


def parse_override(text: str) -> tuple[Loc, str]:
    """``"a.b.0.c=value"`` -> (("a", "b", 0, "c"), "value"); the value stays text until typed."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(p.strip() for p in parts):
        raise ArealError(f"override {text!r}: expected dotted.key=value, e.g. rollout.batch_size=8")
    return tuple(int(p) if p.isdigit() else p.strip() for p in parts), raw


def coerce_text(raw: str, annotation: Any) -> Any:
    """Type a value given as text: YAML, unless the field only holds strings (then kept as text)."""
    if annotation is not None and _holds_only_strings(annotation):
        return None if raw.strip() in ("null", "~") and _allows_none(annotation) else raw
    if raw.strip() == "":
        return ""
    try:
        return parse_value(raw)
    except yaml.YAMLError:
        return raw  # not YAML: left as text for the field's validator to judge


# -- second pass: component sections ------------------------------------------------------------


def _validate_component(kind: str, section: Any, loc: Loc, origins: dict[Loc, str], registry: Registry,
                        errors: list[str]) -> ComponentConfig | None:
    if not isinstance(section, dict):
        return None  # the first pass has reported it: sections are typed as mappings
    path = _join(loc)
    name = section.get("name")
    if not isinstance(name, str) or not name:
        available = ", ".join(registry.names(kind)) or "(none installed)"
        got = "missing" if name is None else f"got {name!r}"
        errors.append(f"{path}.name: the registered name of the {KINDS[kind].label} to use is required ({got}); available: {available}")
        return None
    try:
        model = registry.get(kind, name).load_config_model()
    except ArealError as exc:
        first, _, rest = str(exc).partition("\n")
        errors.append(f"{path}: {first}{_origin_suffix(loc + ('name',), origins)}" + (f"\n{rest}" if rest else ""))
        return None
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        errors.extend(_with_origins(exc, path, origins))
        return None


def _find_sections(annotation: Any, value: Any, loc: Loc) -> Iterator[tuple[Loc, str, Any]]:
    """Every (location, kind, raw section) under ``value``, guided by the model's annotations."""
    annotation, kind = unwrap_annotation(annotation)
    if kind is not None:
        yield loc, kind, value
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is not None:
            for arg in args:
                found = list(_find_sections(arg, value, loc))
                if found:
                    yield from found
                    return
    elif _is_model(annotation):
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict):
            for name, info in annotation.model_fields.items():
                if name in value:
                    item = value[name]
                elif not info.is_required():
                    item = info.get_default(call_default_factory=True)
                else:
                    continue
                yield from _find_sections(_field_annotation(info), item, loc + (name,))
    elif origin in (list, tuple, typing.Sequence) and isinstance(value, (list, tuple)) and args:
        for i, item in enumerate(value):
            yield from _find_sections(args[0], item, loc + (i,))
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            yield from _find_sections(args[1], item, loc + (key,))


# -- typing helpers ---------------------------------------------------------------------------


def _field_annotation(info) -> Any:
    """A pydantic field's annotation with the metadata pydantic split off (``ComponentKind``)."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def unwrap_annotation(annotation: Any) -> tuple[Any, str | None]:
    """Strip ``Annotated``; return (inner type, component kind if marked)."""
    kind = None
    while typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, ComponentKind):
                kind = meta.kind
        annotation = typing.get_args(annotation)[0]
    return annotation, kind


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _annotation_at(model: type[BaseModel], loc: Loc, data: dict[str, Any], registry: Registry) -> Any:
    """The declared type at ``loc`` (None if unknown), entering component sections through the
    config model of the component that ``data`` names there."""
    annotation: Any = model
    for depth, part in enumerate(loc):
        annotation, kind = unwrap_annotation(annotation)
        if kind is not None:
            annotation = _section_model(registry, kind, _get_at(data, loc[:depth] + ("name",)))
            if annotation is None:
                return None
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin in (Union, types.UnionType):
            candidates = [a for a in args if a is not type(None)]
            if len(candidates) != 1:
                return None
            annotation, kind = unwrap_annotation(candidates[0])
            if kind is not None:
                annotation = _section_model(registry, kind, _get_at(data, loc[:depth] + ("name",)))
            origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if _is_model(annotation):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return None
            annotation = _field_annotation(info)
        elif origin in (list, tuple, typing.Sequence) and args:
            annotation = args[0]
        elif origin is dict and len(args) == 2:
            annotation = args[1]
        else:
            return None
    return annotation


def _seed_default_sections(model: type[BaseModel], data: dict[str, Any], loc: Loc) -> None:
    """Copy a defaulted component section (e.g. ``scheduler: {name: local}``) into ``data``
    before a dotted key creates it, so ``scheduler.trainer_ranks=2`` keeps the default ``name``."""
    annotation: Any = model
    for depth, part in enumerate(loc[:-1]):
        if not _is_model(annotation):
            return
        info = annotation.model_fields.get(str(part))
        if info is None:
            return
        inner, kind = unwrap_annotation(_field_annotation(info))
        if _get_at(data, loc[: depth + 1]) is None and not info.is_required():
            default = info.get_default(call_default_factory=True)
            if kind is not None and isinstance(default, dict):
                _set_at(data, loc[: depth + 1], dict(default))
                return
        if kind is not None:
            return
        annotation = inner


def _section_model(registry: Registry, kind: str, name: Any) -> type[BaseModel] | None:
    if not isinstance(name, str):
        return None
    try:
        return registry.get(kind, name).load_config_model()
    except ArealError:
        return None  # reported by the second pass


def _holds_only_strings(annotation: Any) -> bool:
    annotation, _ = unwrap_annotation(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(members) and all(_holds_only_strings(a) for a in members)
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, (str, Path))


def _allows_none(annotation: Any) -> bool:
    annotation, _ = unwrap_annotation(annotation)
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


# -- nested data helpers ------------------------------------------------------------------------


class _RawEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, leaving every value as the text the user wrote: values are
    typed afterwards, exactly like command-line overrides."""

    def decode_complex_value(self, field_name, field, value):  # signature of the base
        return value


def _leaves(data: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, loc + (key,))
    else:
        yield loc, data


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _get_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _set_at(data: dict[str, Any], loc: Loc, value: Any) -> None:
    """Set ``value`` at ``loc``, creating mappings (or a list, for an index) on the way."""
    node: Any = data
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        where = _join(loc[:depth]) or "<root>"
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ArealError(f"cannot set {_join(loc)}: {where} is a list, index it with a number")
            if part > len(node):
                raise ArealError(f"cannot set {_join(loc)}: {where} has {len(node)} items (use index {len(node)} to append)")
            if part == len(node):
                node.append({})
        elif isinstance(node, dict):
            node.setdefault(part, None)
        else:
            raise ArealError(f"cannot set {_join(loc)}: {where} is {node!r}, not a mapping")
        if last:
            node[part] = value
            return
        if node[part] is None:
            node[part] = [] if isinstance(loc[depth + 1], int) else {}
        node = node[part]


def _with_origins(exc: ValidationError, prefix: str, origins: dict[Loc, str]) -> list[str]:
    base = _split_path(prefix) if prefix else ()
    return [line + _origin_suffix(base + tuple(err["loc"]), origins)
            for line, err in zip(format_validation_error(exc, prefix), exc.errors())]


def _origin_suffix(loc: Loc, origins: dict[Loc, str]) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            return f"  [{origins[loc[:end]]}]"
    return ""


def _join(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def _split_path(path: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))
