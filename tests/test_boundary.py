"""Core names no plugin, and plugins use only core's public surface: the boundary is the Protocols,
so a new backend, engine or algorithm plugs in without editing core, and core's internals can change
without breaking a plugin.

The code of every module under ``areal_core/`` is parsed and checked, docstrings and comments
aside (they may mention plugins as examples, and config descriptions may say ``e.g. {name: ...}``):
no identifier (name, attribute, function, class, imported module) contains a first-party plugin's
name, and no string constant *is* one of their component names or package names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "areal_core"
# what a plugin may import from core: the surface, and the contract suites / tiny models for its tests
PUBLIC_MODULES = ("areal_core.plugin", "areal_core.testing")

# what first-party plugins register or are called (plugins/, and those the design card plans)
COMPONENT_NAMES = {
    "sglang", "vllm", "embedded", "fsdp", "megatron", "npu", "ray", "slurm", "agent",
    "grpo", "dr_grpo", "lite_ppo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "sapo", "m2po",
}
PACKAGES = {"sglang", "vllm", "embedded", "fsdp", "megatron", "npu", "ray", "slurm", "grpo", "agent", "align"}
# distinctive enough to be found inside identifiers (``ppo`` is not: "supports")
IDENTIFIER_PARTS = {"sglang", "vllm", "fsdp", "megatron", "grpo", "dapo", "gspo", "m2po", "rloo"}


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            and isinstance(parent, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and parent.body and parent.body[0] is node)


def offences(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for each plugin name in the code of ``source``."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []

    def identifier(name: str, line: int) -> None:
        lowered = name.lower()
        hits = [p for p in IDENTIFIER_PARTS if p in lowered] + [p for p in PACKAGES if f"areal_{p}" in lowered]
        if hits:
            found.append((line, f"identifier {name!r} names {hits[0]!r}"))

    for node in ast.walk(tree):
        if _is_docstring(node, parents.get(node)):
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name):
            identifier(node.id, line)
        elif isinstance(node, ast.Attribute):
            identifier(node.attr, line)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            identifier(node.name, line)
        elif isinstance(node, ast.alias):
            identifier(node.name, line)
        elif isinstance(node, ast.ImportFrom) and node.module:
            identifier(node.module, line)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            parent = parents.get(node)
            if isinstance(parent, ast.Expr) and _is_docstring(parent, parents.get(parent)):
                continue
            text = node.value.strip().lower()
            package = text.split(".")[0].split(":")[0].replace("-", "_")
            if text in COMPONENT_NAMES or package in {f"areal_{p}" for p in PACKAGES}:
                found.append((line, f"string {node.value!r}"))
    return found


def test_core_code_names_no_plugin():
    problems = [f"{path.relative_to(CORE.parent)}:{line}: {what}"
                for path in sorted(CORE.rglob("*.py")) for line, what in offences(path.read_text(encoding="utf-8"))]
    assert not problems, "core must not name a plugin (use the Protocols):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("code, caught", [
    ("from areal_sglang.protocol import X", True),
    ("import areal_fsdp", True),
    ("engine = 'fsdp'", True),
    ("x = SGLangWeightBroadcaster()", True),
    ("backend.name == 'vllm'", True),
    ("factory = 'areal_grpo.presets:grpo'", True),
    ('def f():\n    """uses fsdp, sglang and grpo as examples"""\n', False),
    ("# the fsdp engine does this", False),
    ("help = 'the train engine, e.g. {name: fsdp}'", False),
    ("isinstance(backend, SupportsWeightsChecksum)", False),
])
def test_the_scan_catches_names_in_code_only(code, caught):
    assert bool(offences(code)) is caught


def core_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for each import of a core module outside :data:`PUBLIC_MODULES`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for module in modules:
            public = any(module == m or module.startswith(m + ".") for m in PUBLIC_MODULES)
            if (module == "areal_core" or module.startswith("areal_core.")) and not public:
                found.append((node.lineno, module))
    return found


def test_plugins_import_only_the_public_surface():
    """Every package under plugins/ and contrib/ (their tests aside) imports core through
    ``areal_core.plugin``: what a third-party package can rely on is what first-party ones use."""
    sources = [path for root in ("plugins", "contrib") for path in sorted((REPO / root).rglob("*.py"))
               if "tests" not in path.relative_to(REPO).parts]
    problems = [f"{path.relative_to(REPO)}:{line}: imports {module}"
                for path in sources for line, module in core_imports(path.read_text(encoding="utf-8"))]
    assert not problems, ("plugins import core only through areal_core.plugin (export what is missing "
                          "there and list it in docs/hooks.md):\n  " + "\n  ".join(problems))


@pytest.mark.parametrize("code, caught", [
    ("from areal_core.rollout.client import X", True),
    ("import areal_core.logging", True),
    ("from areal_core import hookimpl", True),
    ("from areal_core.plugin import hookimpl", False),
    ("from areal_core.testing.engines import run_context", False),
    ("from .engine import X", False),
])
def test_the_import_scan(code, caught):
    assert bool(core_imports(code)) is caught
