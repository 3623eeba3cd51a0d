"""`areal plugin new NAME --kind KIND`: every kind generates a plugin of the same shape whose
contract test subclasses that kind's suite; the working kinds pass it as generated."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

from areal_core.cli import main
from areal_core.scaffold import KIND_TEMPLATES, TEMPLATES, new_plugin, render

REPO = Path(__file__).resolve().parents[1]


def imported_areal_modules(source: str) -> set[str]:
    """The ``areal_core...`` modules a Python source imports from."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
        found |= {n for n in names if n.split(".")[0] == "areal_core"}
    return found


@pytest.fixture
def run_generated_tests(monkeypatch):
    """Run a generated plugin's tests with pytest in this process; returns pytest's exit code.

    The plugin's modules and the entries its conftest puts on sys.path are removed afterwards.
    """
    def run(dest: Path, *args: str) -> int:
        before = set(sys.modules)
        monkeypatch.setattr(sys, "path", list(sys.path))
        try:
            return pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(dest),
                                str(dest / "tests"), *args])
        finally:
            for name in set(sys.modules) - before:
                if name.startswith(("areal_", "test_", "conftest")) and not name.startswith("areal_core"):
                    del sys.modules[name]

    return run


@pytest.mark.parametrize("kind", sorted(KIND_TEMPLATES))
def test_every_kind_generates_a_plugin_of_the_template_shape(tmp_path, kind):
    dest = new_plugin("word-count", tmp_path, kind=kind)
    t = KIND_TEMPLATES[kind]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "pyproject.toml", "areal_word_count/__init__.py", "areal_word_count/plugin.py",
                            f"areal_word_count/{t.module}.py", "tests/conftest.py", "tests/test_word_count.py"])
    project = tomllib.loads((dest / "pyproject.toml").read_text())["project"]
    assert project["name"] == "areal-word-count"
    assert project["entry-points"]["areal"] == {"word_count": "areal_word_count.plugin"}
    assert project["optional-dependencies"]["test"][0] == "areal-core[test]"
    for path in dest.rglob("*.py"):  # plugin code: only the one surface; tests: it and the contract suites
        imported = imported_areal_modules(path.read_text()) - {"areal_core.plugin"}
        if path.parent.name == "tests":
            imported = {m for m in imported if not m.startswith("areal_core.testing.")}
        assert not imported, f"{path.relative_to(dest)} imports {imported}"
    test_source = (dest / "tests" / "test_word_count.py").read_text()
    assert f"from areal_core.testing.{t.suite_module} import" in test_source and f"({t.suite})" in test_source
    readme = (dest / "README.md").read_text()
    assert "areal plugin new word_count --kind " + kind in readme and "$" not in readme.replace("$ ", "")


def test_plugins_template_is_the_generated_reward_plugin():
    files = render("myplugin", "reward")
    template = REPO / "plugins" / "_template"
    on_disk = {str(p.relative_to(template)): p.read_text() for p in template.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)}
    assert on_disk == files, ("plugins/_template is stale; regenerate it: rm -r plugins/_template && areal plugin new myplugin --dir plugins "
                              "&& mv plugins/areal-myplugin plugins/_template")


@pytest.mark.parametrize("kind", sorted(k for k, t in KIND_TEMPLATES.items() if t.working and k != "algorithm"))
def test_working_kinds_pass_their_contract_suite_as_generated(tmp_path, kind, run_generated_tests):
    dest = new_plugin(f"gen-{kind.replace('_', '-')}", tmp_path, kind=kind)
    assert run_generated_tests(dest) == 0


def test_generated_algorithm_passes_its_contract_suite(tmp_path, run_generated_tests):
    pytest.importorskip("areal_fsdp", reason="the algorithm suite trains with the fsdp engine (areal-fsdp)")
    dest = new_plugin("gen-algorithm", tmp_path, kind="algorithm")
    assert run_generated_tests(dest) == 0


@pytest.mark.parametrize("kind", sorted(k for k, t in KIND_TEMPLATES.items() if not t.working))
def test_skeleton_kinds_say_what_to_implement(tmp_path, kind, run_generated_tests):
    dest = new_plugin(f"gen-{kind.replace('_', '-')}", tmp_path, kind=kind)
    source = (dest / f"areal_gen_{kind}" / f"{KIND_TEMPLATES[kind].module}.py").read_text()
    assert "raise NotImplementedError(" in source
    readme = (dest / "README.md").read_text()
    assert "fails until" in readme
    # the record, the config model and the protocol's shape pass already; behaviour fails until written
    assert run_generated_tests(dest, "-k", "record or config or protocol") == 0


def test_cli_kind_option_and_errors(tmp_path, capsys):
    assert main(["plugin", "new", "my-sink", "--kind", "metric_sink", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "areal-my-sink" / "areal_my_sink" / "sink.py").exists()
    assert main(["plugin", "new", "my-engine", "--kind", "train_engine", "--dir", str(tmp_path)]) == 0
    assert "is a skeleton: its contract test fails until you implement" in capsys.readouterr().out
    assert main(["plugin", "new", "my-sink", "--kind", "metric_sink", "--dir", str(tmp_path)]) == 2
    assert main(["plugin", "new", "x", "--kind", "engine", "--dir", str(tmp_path)]) == 2
    assert "invalid choice: 'engine'" in capsys.readouterr().err


def test_templates_have_one_folder_per_kind():
    assert {p.name for p in TEMPLATES.iterdir() if p.is_dir()} == {"common", *KIND_TEMPLATES}
