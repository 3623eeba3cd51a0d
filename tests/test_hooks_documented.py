"""Every hook spec is documented in docs/hooks.md and exercised by a test (the datasette rule)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from areal_core import hookspecs
from areal_core.registry import KINDS

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "areal_spec"))


def test_hooks_found():
    assert HOOKS and all(h.startswith("areal_") for h in HOOKS)
    assert {k.hook for k in KINDS.values()} <= set(HOOKS), "every registry kind must have its hook spec"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = (REPO / "docs" / "hooks.md").read_text()
    section = re.search(rf"^## `{hook}\(\)`\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    assert section, f"docs/hooks.md has no '## `{hook}()`' section"
    body = section.group(1)
    for part in ("Returns", "Called", "@hookimpl", f"def {hook}("):
        assert part in body, f"docs/hooks.md section of {hook} lacks {part!r} (signature, when called, example)"
    assert (inspect.getdoc(getattr(hookspecs, hook)) or "").strip(), f"hookspecs.{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    me = Path(__file__).name
    tested = [p.name for p in (REPO / "tests").glob("test_*.py") if p.name != me and f"def {hook}(" in p.read_text()]
    assert tested, f"no test in tests/ implements {hook} (add it to a temporary plugin in a test)"


def test_the_plugin_surface_is_documented():
    import areal_core.plugin

    doc = (REPO / "docs" / "hooks.md").read_text()
    section = re.search(r"^## The import surface: `areal_core.plugin`\n(.*?)(?=^## )", doc, re.S | re.M)
    assert section, "docs/hooks.md has no '## The import surface: `areal_core.plugin`' section"
    missing = [n for n in areal_core.plugin.__all__ if f"`{n}`" not in section.group(1)]
    assert not missing, f"docs/hooks.md's import-surface table does not list {missing}"
