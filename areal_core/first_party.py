"""The first-party plugin distributions and the components each registers.

``areal_core/first_party.json`` says which package provides a component that is not installed
(``'fsdp' is provided by areal-fsdp: pip install areal-fsdp``). It is generated from the source
tree, never edited by hand: every ``plugins/*/pyproject.toml`` (but ``_template``) gives a
distribution and its ``areal`` entry points; importing those plugin modules and calling their
hooks gives the registered names. A test fails when the committed file is stale::

    python -m areal_core.first_party            # rewrite areal_core/first_party.json
    python -m areal_core.first_party --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
from pathlib import Path
from typing import Any

JSON_PATH = Path(__file__).with_name("first_party.json")
SOURCE_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@functools.cache
def load() -> dict[str, Any]:
    """The committed table: ``{"distributions": {dist: {"path", "entry_points", "components"}}}``."""
    return json.loads(JSON_PATH.read_text(encoding="utf-8"))


def providers(kind: str) -> dict[str, str]:
    """``{component name: first-party distribution}`` for one kind."""
    return {name: dist for dist, info in load()["distributions"].items() for name in info["components"].get(kind, [])}


def install_hint(dist: str) -> str:
    """How to install a first-party distribution, from the index or from a source checkout."""
    path = load()["distributions"][dist]["path"]
    return f"pip install {dist} (in a source checkout: pip install -e {path})"


def generate(plugins_dir: Path = SOURCE_PLUGINS) -> dict[str, Any]:
    """Build the table from the plugin packages under ``plugins_dir`` (imports their plugin modules)."""
    import tomllib

    from areal_core.registry import build_registry

    distributions: dict[str, Any] = {}
    for pyproject in sorted(plugins_dir.glob("*/pyproject.toml")):
        if pyproject.parent.name.startswith("_"):
            continue
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        dist = project["name"]
        entry_points = dict(sorted(project.get("entry-points", {}).get("areal", {}).items()))
        sys.path.insert(0, str(pyproject.parent))
        try:
            modules = [(importlib.import_module(ref.partition(":")[0]), dist) for ref in entry_points.values()]
        finally:
            sys.path.remove(str(pyproject.parent))
        registry = build_registry(extra_plugins=modules, entry_points=False)
        components: dict[str, list[str]] = {}
        for c in registry.components.values():
            if c.distribution == dist:
                components.setdefault(c.kind, []).append(c.name)
        distributions[dist] = {
            "path": f"{plugins_dir.name}/{pyproject.parent.name}",
            "entry_points": entry_points,
            "components": {kind: sorted(names) for kind, names in sorted(components.items())},
        }
    return {"generated_by": "python -m areal_core.first_party (from plugins/*/pyproject.toml; do not edit)",
            "distributions": distributions}


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m areal_core.first_party", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs from the source tree")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        stale = JSON_PATH.read_text(encoding="utf-8") != text
        print(f"{JSON_PATH} is {'stale: run python -m areal_core.first_party' if stale else 'up to date'}")
        return int(stale)
    JSON_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
