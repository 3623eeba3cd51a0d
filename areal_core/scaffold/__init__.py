"""``areal plugin new NAME --kind KIND``: write a new plugin distribution for one component kind.

The files come from ``templates/``: ``common/`` (pyproject with the ``areal`` entry point and a
``test`` extra, README, ``plugin.py`` with the kind's hook, the tests' conftest) and one folder
per kind (``component.py``: the component and its config model, ``test.py``: a subclass of the
kind's contract suite, ``about.md``: the README's kind section). Each is a ``.tmpl`` file (so
that linters and packagers do not read it as code) holding a :class:`string.Template` text;
``${package}``, ``${cls}``... are filled from :func:`fields`.

Generated code imports only from ``areal_core.plugin`` (tests: ``areal_core.testing``).
``plugins/_template`` is exactly ``new_plugin("myplugin", "reward")`` (a test keeps it so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from areal_core.errors import ArealError
from areal_core.registry import KINDS

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEST_EXTRA = ("areal-core[test]",)


@dataclass(frozen=True)
class KindTemplate:
    """What differs per kind: the module and class the component lives in, the contract suite
    its test subclasses, whether that suite trains with a real train engine (the generated test
    then names the first-party one, ``${train_engine}``, and the ``test`` extra installs its
    distribution), and whether the code is a working component (it passes its suite as
    generated) or a skeleton raising NotImplementedError."""

    module: str
    suffix: str
    suite: str
    suite_module: str
    summary: str
    needs_train_engine: bool = False
    working: bool = True


KIND_TEMPLATES: dict[str, KindTemplate] = {
    "reward": KindTemplate("reward", "Reward", "RewardContract", "reward",
                           "1 when the completion contains the sample's answer as a whole word"),
    "workflow": KindTemplate("workflow", "Workflow", "WorkflowContract", "workflow",
                             "answer, and retry with feedback while the reward is below a threshold"),
    "algorithm": KindTemplate("algorithm", "Algorithm", "AlgorithmContract", "algorithm",
                              "group-baseline policy gradient with capped importance weights",
                              needs_train_engine=True),
    "metric_sink": KindTemplate("sink", "Sink", "MetricSinkContract", "metric_sink",
                                "one CSV row per metric value in RUN_DIR/metrics.csv"),
    "device": KindTemplate("device", "Device", "DeviceContract", "device",
                           "an accelerator torch knows by device type (torch.<type>), default Intel XPU"),
    "scheduler": KindTemplate("scheduler", "Scheduler", "SchedulerContract", "scheduler",
                              "scheduler skeleton (to be written)", working=False),
    "train_engine": KindTemplate("engine", "Engine", "TrainEngineContract", "train_engine",
                                 "train engine skeleton (to be written)", working=False),
    "inference_backend": KindTemplate("backend", "Backend", "InferenceBackendContract", "inference_backend",
                                      "inference backend skeleton (to be written)", working=False),
    "pair_loss": KindTemplate("loss", "Loss", "PairLossContract", "pair_loss",
                              "hinge on the scaled preference margin (areal dpo)"),
}
assert set(KIND_TEMPLATES) == set(KINDS), "every registry kind needs its plugin template"
DEFAULT_KIND = "reward"


def fields(name: str, kind: str) -> dict[str, str]:
    """The template variables for plugin ``name`` providing a ``kind`` component."""
    from areal_core import first_party

    snake = name.replace("-", "_")
    t = KIND_TEMPLATES[kind]
    engine, engine_dist = min(first_party.providers("train_engine").items(), default=("", ""))
    extra = (*TEST_EXTRA, *((engine_dist,) if t.needs_train_engine and engine_dist else ()))
    return {
        "name": snake,
        "dist": f"areal-{snake.replace('_', '-')}",
        "package": f"areal_{snake}",
        "cls": "".join(part.capitalize() for part in snake.split("_")) + t.suffix,
        "kind": kind,
        "label": KINDS[kind].label,
        "hook": KINDS[kind].hook,
        "module": t.module,
        "summary": t.summary,
        "suite": t.suite,
        "suite_module": t.suite_module,
        "test_extra": ", ".join(f'"{d}"' for d in extra),
        "train_engine": engine,
        "train_engine_dist": engine_dist,
    }


def render(name: str, kind: str = DEFAULT_KIND) -> dict[str, str]:
    """``{relative path: text}`` of the plugin distribution for ``name`` and ``kind``."""
    if kind not in KIND_TEMPLATES:
        raise ArealError(f"unknown component kind {kind!r}; kinds are {', '.join(KIND_TEMPLATES)}")
    if not re.fullmatch(r"[a-z][a-z0-9]*([_-][a-z0-9]+)*", name):
        raise ArealError(f"plugin name {name!r}: use lowercase letters and digits, words joined by - or _ (e.g. 'my-reward')")
    values = fields(name, kind)

    def fill(path: Path) -> str:
        path = path.with_name(path.name + ".tmpl")
        try:
            return Template(path.read_text(encoding="utf-8")).substitute(values)
        except (KeyError, ValueError) as exc:  # a bug in a template, not in the user's input
            raise RuntimeError(f"scaffold template {path}: {exc!r}") from exc

    values["about"] = fill(TEMPLATES / kind / "about.md").rstrip("\n")
    package, common = values["package"], TEMPLATES / "common"
    return {
        "pyproject.toml": fill(common / "pyproject.toml"),
        "README.md": fill(common / "README.md"),
        f"{package}/__init__.py": fill(common / "__init__.py"),
        f"{package}/plugin.py": fill(common / "plugin.py"),
        f"{package}/{values['module']}.py": fill(TEMPLATES / kind / "component.py"),
        "tests/conftest.py": fill(common / "conftest.py"),
        f"tests/test_{values['name']}.py": fill(TEMPLATES / kind / "test.py"),
    }


def new_plugin(name: str, parent: str | Path = "plugins", kind: str = DEFAULT_KIND) -> Path:
    """Create ``parent/areal-NAME`` providing one ``kind`` component named NAME; returns its path."""
    files = render(name, kind)
    dest = Path(parent) / fields(name, kind)["dist"]
    if dest.exists():
        raise ArealError(f"{dest} already exists; choose another name or --dir")
    for relative, text in files.items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dest
