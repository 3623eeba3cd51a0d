"""``areal plugin new NAME``: copy ``plugins/_template`` into a new, renamed plugin distribution.

The template is a working plugin named ``myplugin`` (distribution ``areal-myplugin``, package
``areal_myplugin``, classes ``MyPlugin...``). Scaffolding copies it and replaces those four
spellings, in file contents and in paths, with the new name's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import areal_core
from areal_core.errors import ArealError

TEMPLATE_DIR = Path(areal_core.__file__).resolve().parent.parent / "plugins" / "_template"
TEMPLATE_NAME = "myplugin"
SKIPPED = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "*.pyc")


def spellings(name: str) -> dict[str, str]:
    """Template spelling -> new spelling, longest first (so ``areal_myplugin`` wins over ``myplugin``)."""
    snake = name.replace("-", "_")
    return {
        "areal-myplugin": f"areal-{snake.replace('_', '-')}",
        "areal_myplugin": f"areal_{snake}",
        "MyPlugin": "".join(part.capitalize() for part in snake.split("_")),
        "myplugin": snake,
    }


def new_plugin(name: str, parent: str | Path = "plugins", template: Path = TEMPLATE_DIR) -> Path:
    """Create ``parent/areal-NAME`` from the template; returns its path."""
    if not re.fullmatch(r"[a-z][a-z0-9]*([_-][a-z0-9]+)*", name):
        raise ArealError(f"plugin name {name!r}: use lowercase letters and digits, words joined by - or _ (e.g. 'my-reward')")
    if not template.is_dir():
        raise ArealError(
            f"plugin template not found at {template}: it ships with the areal source tree "
            "(clone the repository and install areal-core with `pip install -e .`)"
        )
    names = spellings(name)
    dest = Path(parent) / names["areal-myplugin"]
    if dest.exists():
        raise ArealError(f"{dest} already exists; choose another name or --dir")
    shutil.copytree(template, dest, ignore=SKIPPED)
    for path in sorted(dest.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # children before parents
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for old, new in names.items():
                text = text.replace(old, new)
            path.write_text(text, encoding="utf-8")
        renamed = path.name
        for old, new in names.items():
            renamed = renamed.replace(old, new)
        if renamed != path.name:
            path.rename(path.with_name(renamed))
    return dest
