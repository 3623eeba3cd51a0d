"""YAML as config files use it: YAML 1.2 scalars, line numbers per key, clear parse errors.

PyYAML implements YAML 1.1, where ``off``/``no``/``yes`` are booleans, ``1e-5`` is a string and
``1:30`` is the integer 90. Config files mean YAML 1.2 (``recover: off`` is the string "off",
``lr: 1e-5`` a float), so :class:`ConfigLoader` resolves booleans, integers and floats by the 1.2
core schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from areal_core.errors import ArealError

Path_ = tuple  # a location in nested data: keys (str) and list indices (int)


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans (true/false only) and floats (``1e-5``)."""


_BOOL, _INT, _FLOAT = ("tag:yaml.org,2002:" + t for t in ("bool", "int", "float"))
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _construct_int(loader: ConfigLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 16) if text.startswith("0x") else int(text, 10)  # "010" is ten, as in YAML 1.2


ConfigLoader.add_constructor(_INT, _construct_int)


def parse_value(text: str) -> Any:
    """One value as written on a command line or in an env var: a YAML scalar, list or mapping.

    Raises ``yaml.YAMLError`` when ``text`` is not valid YAML.
    """
    return yaml.load(text, Loader=ConfigLoader)


def read_yaml_file(path: str | Path) -> tuple[dict[str, Any], dict[Path_, int]]:
    """Load a config file. Returns (data, line of every key and list item by its path).

    Raises one ArealError naming file, line and column for a missing file, malformed YAML, a
    duplicate key, or a document that is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArealError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is not None:
            _record_lines(node, (), lines, path)
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ArealError(f"{path}: {_describe_yaml_error(exc)}") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ArealError(f"{path}:1: a config file must be a mapping of keys to values, got a {type(data).__name__}")
    return data, lines


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                dotted = ".".join(str(p) for p in path + (key,))
                raise ArealError(f"{file}:{line}: duplicate key {dotted!r} (first set on line {first_seen[key]})")
            first_seen[key] = line
            lines[path + (key,)] = line
            _record_lines(value_node, path + (key,), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines, file)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"{where}malformed YAML: {problem}" + (f" ({context})" if context else "")
