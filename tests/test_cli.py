"""The `areal` command: plugins, config show/docs, plugin new, serve, train/plot dispatch, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from areal_core.cli import main
from areal_core.config.docgen import render_config_reference
from areal_core.registry import PluginFailure, build_registry
from coretest_support import PYTHON, subprocess_env

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv, env=None, cwd=None):
    return subprocess.run([PYTHON, "-m", "areal_core", *map(str, argv)], capture_output=True, text=True,
                          env=env or subprocess_env(), cwd=cwd, timeout=120)


def test_plugins_table_groups_by_kind_and_lists_failures(toy_registry, capsys):
    toy_registry.failures.append(PluginFailure("broken", "areal-broken 0.1", "ImportError: no module named 'x'"))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if "toy_backend" in line)
    assert "inference backend" in row and "prints its arguments" in row and "toy-dist" in row
    assert any("jsonl" in line and "areal-core" in line for line in lines)
    assert out.index("train engine") < out.index("inference backend") < out.index("metric sink")
    assert "plugins that failed to load" in out and "areal-broken 0.1" in out and "no module named 'x'" in out


def test_plugins_json(toy_registry, capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"kind": "reward", "name": "toy_reward", "summary": "1 when the completion is the target",
            "distribution": "toy-dist", "version": ""} in data["components"]
    assert data["failures"] == []


def test_config_show_prints_the_resolved_yaml(toy_registry, run_yaml, capsys, monkeypatch):
    monkeypatch.setenv("AREAL_TRIAL_NAME", "from-env")
    assert main(["config", "show", "--config", str(run_yaml()), "rollout.batch_size=3", "algorithm.eps_clip=0.1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["rollout"]["batch_size"] == 3 and shown["trial_name"] == "from-env"
    assert shown["algorithm"] == {"name": "toy_algo", "eps_clip": 0.1, "mode": "token"}


def test_errors_exit_2_with_the_message_and_no_traceback(toy_registry, run_yaml, capsys):
    assert main(["config", "show", "--config", str(run_yaml()), "reward.name=nope", "seed=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config (2 errors):") and "unknown reward 'nope'" in err and "seed:" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(toy_registry, run_yaml, capsys):
    assert main(["config", "show", "--config", str(run_yaml()), "reward.name=nope", "--debug"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_train_and_plot_dispatch_lazily_with_their_arguments(monkeypatch, tmp_path):
    import sys
    import types

    calls = []
    for name, attr in (("areal_core.trainer.entry", "train_main"), ("areal_core.trainer.plot", "main")):
        module = types.ModuleType(name)
        setattr(module, attr, lambda argv, name=name: calls.append((name, argv)) or 0)
        monkeypatch.setitem(sys.modules, name, module)
    assert main(["--log-level", "warning", "train", "--config", "x.yaml", "rollout.batch_size=2", "--help"]) == 0
    assert main(["plot", str(tmp_path)]) == 0
    assert calls == [("areal_core.trainer.entry", ["--config", "x.yaml", "rollout.batch_size=2", "--help"]),
                     ("areal_core.trainer.plot", [str(tmp_path)])]


def test_missing_delegate_module_is_a_clear_error(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "areal_core.trainer.plot", None)  # import raises ModuleNotFoundError
    assert main(["plot", "runs/x"]) == 2
    assert "`areal plot` is not available: module areal_core.trainer.plot is not installed" in capsys.readouterr().err


def test_serve_dry_run_builds_the_backend_command(toy_registry, capsys):
    assert main(["serve", "--backend", "toy_backend", "--model", "/m", "--port", "4321", "--dry-run", "extra_args=[--x, '1']"]) == 0
    assert capsys.readouterr().out.strip().endswith("/m 127.0.0.1 4321 --x 1")
    assert main(["serve", "--backend", "toy_backend", "--model", "/m", "--dry-run", "n_servers=0"]) == 2
    assert "n_servers: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["serve", "--backend", "toy_backnd", "--model", "/m"]) == 2
    assert "did you mean 'toy_backend'?" in capsys.readouterr().err


def test_serve_execs_the_server_and_plugins_show_failures(fake_dist):
    """Through an installed-looking distribution, in a fresh process: exec, and a broken plugin."""
    site = fake_dist("areal-toy", "0.2.0", {"toy": "toyplugin:PLUGIN"})
    fake_dist("areal-broken", "0.1.0", {"broken": "broken_plugin"}, {"broken_plugin": "import no_such_dependency_xyz\n"})
    env = subprocess_env(site)
    served = run_cli("serve", "--backend", "toy_backend", "--model", "/m", "--port", "5555", "extra_args=[a]", env=env)
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "toy server /m 127.0.0.1 5555 a"

    listed = run_cli("plugins", "--json", env=env)
    data = json.loads(listed.stdout)
    assert {"toy_backend", "toy_reward"} <= {c["name"] for c in data["components"] if c["distribution"] == "areal-toy"}
    assert {"entry_point": "broken", "distribution": "areal-broken 0.1.0",
            "error": "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"} in data["failures"]

    failed = run_cli("serve", "--backend", "nope", "--model", "/m", env=env)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "plugin 'broken' from areal-broken 0.1.0 failed to load: ModuleNotFoundError" in failed.stderr


def test_plugins_fails_on_a_misspelled_hook_naming_it(fake_dist):
    site = fake_dist("areal-typo", "0.1.0", {"typo": "typo_cli_plugin"}, {"typo_cli_plugin": (
        "from areal_core.plugin import Component, hookimpl\n\n"
        "@hookimpl\ndef areal_register_reward():\n    return [Component('x', 'm:X', None, 'x')]\n")})
    listed = run_cli("plugins", env=subprocess_env(site))
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
    assert ("plugin typo_cli_plugin (areal-typo 0.1.0): `areal_register_reward` is not an areal hook; "
            "did you mean `areal_register_rewards`?") in listed.stderr


def test_a_name_conflict_is_listed_and_fails_only_what_uses_it(fake_dist, run_yaml):
    site = fake_dist("areal-toy", "0.2.0", {"toy": "toyplugin:PLUGIN"})
    fake_dist("areal-toy-fork", "0.1.0", {"fork": "toy_fork"},
              {"toy_fork": "from toyplugin import PLUGIN as _toy\nareal_register_rewards = _toy.areal_register_rewards\n"})
    env = subprocess_env(site)
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "names registered twice" in listed.stdout and "uninstall one of areal-toy, areal-toy-fork" in listed.stdout
    data = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert [(c["kind"], c["name"], c["distributions"]) for c in data["conflicts"]] == [
        ("reward", "toy_reward", ["areal-toy", "areal-toy-fork"])]
    assert "toy_backend" in {c["name"] for c in data["components"]}  # the rest of both plugins works

    shown = run_cli("config", "show", "--config", run_yaml(), env=env)  # MINIMAL_RUN uses toy_reward
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert "reward name 'toy_reward' is registered 2 times" in shown.stderr
    assert "uninstall one of areal-toy, areal-toy-fork" in shown.stderr


def test_config_docs_writes_the_reference(tmp_path, capsys):
    out = tmp_path / "ref.md"
    assert main(["config", "docs", "-o", str(out)]) == 0
    text = out.read_text()
    assert "| `rollout.max_head_offpolicyness` |" in text and "#### `wandb`" in text


def test_committed_config_reference_is_up_to_date():
    expected = render_config_reference(build_registry(entry_points=False))
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == expected, "docs/config-reference.md is stale: regenerate it with `areal config docs`"


def test_plugin_new_scaffolds_a_plugin_whose_tests_pass(tmp_path, capsys):
    assert main(["plugin", "new", "word-count", "--dir", str(tmp_path)]) == 0
    dest = tmp_path / "areal-word-count"
    assert "created" in capsys.readouterr().out
    assert (dest / "areal_word_count" / "plugin.py").exists() and (dest / "tests" / "test_word_count.py").exists()
    pyproject = (dest / "pyproject.toml").read_text()
    assert 'name = "areal-word-count"' in pyproject and 'word_count = "areal_word_count.plugin"' in pyproject
    assert "myplugin" not in "".join(p.read_text() for p in dest.rglob("*") if p.is_file()).lower()
    result = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dest / "tests")],
                            capture_output=True, text=True, cwd=dest, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert main(["plugin", "new", "word-count", "--dir", str(tmp_path)]) == 2
    assert main(["plugin", "new", "Bad Name", "--dir", str(tmp_path)]) == 2


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "plugins" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        raise SystemExit(main(["--version"]))
