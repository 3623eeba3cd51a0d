"""A third-party plugin, pip-installed into a fresh environment, is selectable by name.

contrib/areal-example is installed (editable, no dependencies) into a new virtual environment
that sees this environment's packages; a small kit distribution supplies the other sections a run
config needs (engine, backend, scheduler), so nothing depends on which plugins this environment
happens to have. Then, in that environment: ``areal plugins`` lists the example's components
under its distribution, and ``areal config show`` validates their sections by their own models.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

KIT_PLUGIN = textwrap.dedent('''
    from areal_core import Component, hookimpl

    @hookimpl
    def areal_register_train_engines():
        return [Component("kit_engine", "areal_venvkit.plugin:object", None, "placeholder engine")]

    @hookimpl
    def areal_register_inference_backends():
        return [Component("kit_backend", "areal_venvkit.plugin:object", None, "placeholder backend")]

    @hookimpl
    def areal_register_schedulers():
        return [Component("kit_scheduler", "areal_venvkit.plugin:object", None, "placeholder scheduler")]
''')

KIT_PYPROJECT = textwrap.dedent('''
    [build-system]
    requires = ["setuptools>=68"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "areal-venvkit"
    version = "0.0.1"
    dependencies = ["areal-core"]

    [project.entry-points.areal]
    venvkit = "areal_venvkit.plugin"

    [tool.setuptools.packages.find]
    include = ["areal_venvkit*"]
''')

RUN = {
    "model_path": "/models/tiny",
    "actor": {"name": "kit_engine"},
    "inference": {"name": "kit_backend"},
    "scheduler": {"name": "kit_scheduler"},
    "workflow": {"name": "rlvr", "n_samples": 2},
    "algorithm": {"name": "reinforce_baseline", "baseline": "batch_mean"},
    "reward": {"name": "regex_match", "pattern": "<answer>{{answer}}</answer>"},
    "train_dataset": {"path": "data/train.jsonl"},
}


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    """A fresh venv seeing this one's packages, with areal-example and the kit installed into it."""
    root = tmp_path_factory.mktemp("third_party")
    venv = root / "venv"
    # --system-site-packages alone would expose the base interpreter's packages, not this
    # environment's (itself a venv): a .pth file adds this environment's site directory instead.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    child_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (child_site / "_parent_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")

    example = root / "areal-example"
    shutil.copytree(REPO / "contrib" / "areal-example", example, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    kit = root / "areal-venvkit"
    (kit / "areal_venvkit").mkdir(parents=True)
    (kit / "areal_venvkit" / "__init__.py").write_text("")
    (kit / "areal_venvkit" / "plugin.py").write_text(KIT_PLUGIN)
    (kit / "pyproject.toml").write_text(KIT_PYPROJECT)
    # Build with this environment's setuptools when it has one (offline, fast); else let pip fetch it.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *offline, "-e", str(example), "-e", str(kit)],
                   check=True, timeout=300, env=_env())
    return python


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AREAL_", "PYTHONPATH", "PIP_"))}


def areal(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "areal_core", *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=120)


def test_areal_plugins_lists_the_installed_components(venv_python):
    listed = areal(venv_python, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = {(c["kind"], c["name"]): c for c in json.loads(listed.stdout)["components"] if c["distribution"] == "areal-example"}
    assert set(mine) == {("algorithm", "reinforce_baseline"), ("algorithm", "cispo"), ("reward", "regex_match")}
    assert mine[("algorithm", "reinforce_baseline")]["version"] == "0.1.0"
    table = areal(venv_python, "plugins").stdout
    assert any("reinforce_baseline" in line and "areal-example" in line for line in table.splitlines())


def test_config_sections_are_validated_by_the_plugins_models(venv_python, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN, sort_keys=False))
    shown = areal(venv_python, "config", "show", "--config", str(config), "algorithm.entropy_coef=0.01")
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout)
    assert resolved["algorithm"] == {"name": "reinforce_baseline", "baseline": "batch_mean", "entropy_coef": 0.01,
                                     "drop_uniform_groups": True}
    assert resolved["reward"] == {"name": "regex_match", "pattern": "<answer>{{answer}}</answer>", "match_reward": 1.0,
                                  "miss_reward": 0.0, "ignore_case": False}

    bad = areal(venv_python, "config", "show", "--config", str(config),
                "algorithm.baseline=median", "algorithm.entropy_coef=-1", "reward.pattern=(unclosed", "reward.typo=1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    for expected in ("algorithm.baseline: Input should be 'group_mean', 'batch_mean' or 'none'",
                     "algorithm.entropy_coef: Input should be greater than or equal to 0",
                     "reward.pattern: Value error, not a valid regular expression",
                     "reward.typo: Extra inputs are not permitted"):
        assert expected in bad.stderr, bad.stderr
    assert "invalid config (4 errors)" in bad.stderr
