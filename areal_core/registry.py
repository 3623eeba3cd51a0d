"""Plugin discovery and the one generic registry that serves every component kind.

Discovery loads each module named by an entry point in the ``areal`` group, registers it with a
pluggy ``PluginManager`` and calls the ``areal_register_*`` hooks. A plugin whose import fails is
recorded (never silently skipped): ``areal plugins`` lists it, and an unknown-name error names it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from areal_core import hookspecs
from areal_core.errors import ArealError

ENTRY_POINT_GROUP = "areal"


@dataclass(frozen=True)
class Kind:
    """A component kind: its config key, the hook that provides it, and a human label."""

    name: str
    hook: str
    label: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("train_engine", "areal_register_train_engines", "train engine"),
        Kind("inference_backend", "areal_register_inference_backends", "inference backend"),
        Kind("algorithm", "areal_register_algorithms", "algorithm"),
        Kind("reward", "areal_register_rewards", "reward"),
        Kind("workflow", "areal_register_workflows", "workflow"),
        Kind("scheduler", "areal_register_schedulers", "scheduler"),
        Kind("device", "areal_register_devices", "device"),
        Kind("metric_sink", "areal_register_metric_sinks", "metric sink"),
        Kind("pair_loss", "areal_register_pair_losses", "pair loss"),
    )
}

# First-party components that live in separately installed distributions: used only to tell a
# user which package to install when a name is unknown.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("train_engine", "fsdp"): "areal-fsdp",
    ("train_engine", "megatron"): "areal-megatron",
    ("inference_backend", "sglang"): "areal-sglang",
    ("inference_backend", "vllm"): "areal-vllm",
    ("inference_backend", "embedded"): "areal-embedded",
    ("device", "npu"): "areal-npu",
    **{
        ("algorithm", a): "areal-grpo"
        for a in ("grpo", "dr_grpo", "lite_ppo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "sapo", "m2po")
    },
}


@dataclass(frozen=True)
class Component:
    """What a provider hook returns for one component.

    ``factory`` and ``config`` are ``"module:attr"`` strings (or the objects themselves), imported
    only when the component is used. ``config`` is a pydantic model class validating the
    component's config section, or None when it takes no options.
    """

    name: str
    factory: Any
    config: Any = None
    summary: str = ""
    kind: str = ""
    distribution: str = ""
    version: str = ""

    def load_factory(self):
        return _resolve(self.factory, f"{self.kind} {self.name!r} factory")

    def load_config_model(self):
        from areal_core.config.base import ComponentConfig

        if self.config is None:
            return ComponentConfig
        return _resolve(self.config, f"{self.kind} {self.name!r} config model")


@dataclass(frozen=True)
class PluginFailure:
    """A plugin whose import or registration failed, kept for ``areal plugins`` and errors."""

    entry_point: str
    distribution: str
    error: str


@dataclass
class Registry:
    """Every component of every kind, keyed by (kind, name)."""

    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    plugin_manager: pluggy.PluginManager | None = None

    def add(self, component: Component) -> None:
        key = (component.kind, component.name)
        if key in self.components:
            other = self.components[key]
            raise ArealError(
                f"duplicate {KINDS[component.kind].label} name {component.name!r}: registered by "
                f"{other.distribution or '?'} ({other.factory}) and by "
                f"{component.distribution or '?'} ({component.factory}); uninstall one of them"
            )
        self.components[key] = component

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.components if k == kind)

    def by_kind(self, kind: str) -> list[Component]:
        return [self.components[(kind, n)] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise ArealError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self.components[(kind, name)]
        except KeyError:
            raise ArealError(self._unknown_name_message(kind, name)) from None

    def create(self, kind: str, name: str, config=None, **deps):
        """Build component ``name`` of ``kind``: validate ``config`` (dict or model), call its factory."""
        component = self.get(kind, name)
        model = component.load_config_model()
        if config is None or isinstance(config, dict):
            from areal_core.config.base import validate_section

            config = validate_section(model, {"name": name, **(config or {})}, path=kind)
        return component.load_factory()(config, **deps)

    def _unknown_name_message(self, kind: str, name: str) -> str:
        label = KINDS[kind].label
        available = self.names(kind)
        lines = [f"unknown {label} {name!r}."]
        lines.append(f"  available {label}s: {', '.join(available) if available else '(none installed)'}")
        close = difflib.get_close_matches(name, available, n=1)
        if close:
            lines.append(f"  did you mean {close[0]!r}?")
        dist = KNOWN_DISTRIBUTIONS.get((kind, name))
        if dist:
            lines.append(f"  {name!r} is provided by {dist}: pip install {dist}")
        else:
            lines.append(f"  if a plugin provides it, install that plugin (pip install <plugin>) and check `areal plugins`")
        for f in self.failures:
            lines.append(f"  plugin {f.entry_point!r} from {f.distribution} failed to load: {f.error}")
        return "\n".join(lines)


def _resolve(ref, what: str):
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - reported with the reference that failed
        raise ArealError(f"cannot import {what} {ref!r}: {type(exc).__name__}: {exc}") from exc
    return obj


def _components_from(pm: pluggy.PluginManager, plugin, dist: str, version: str) -> list[Component]:
    found = []
    for kind in KINDS.values():
        hook_impls = [i for i in getattr(pm.hook, kind.hook).get_hookimpls() if i.plugin is plugin]
        for impl in hook_impls:
            for c in impl.function() or []:
                found.append(replace(c, kind=kind.name, distribution=dist, version=version))
    return found


def build_registry(extra_plugins: list[tuple[object, str]] = (), entry_points: bool = True) -> Registry:
    """Discover every plugin and return a fresh registry.

    ``extra_plugins``: (module-or-object, distribution label) pairs registered after the
    built-ins, as tests do to add temporary plugins. ``entry_points=False`` skips installed plugins.
    """
    pm = pluggy.PluginManager("areal")
    pm.add_hookspecs(hookspecs)
    registry = Registry(plugin_manager=pm)
    core_version = _version("areal-core")
    plugins: list[tuple[object, str, str]] = [(importlib.import_module("areal_core.builtins"), "areal-core", core_version)]

    if entry_points:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else ""
            try:
                plugins.append((ep.load(), dist, version))
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                registry.failures.append(PluginFailure(ep.name, f"{dist} {version}".strip(), f"{type(exc).__name__}: {exc}"))
    plugins += [(p, label, "") for p, label in extra_plugins]

    for plugin, dist, version in plugins:
        try:
            if pm.is_registered(plugin):
                continue
            pm.register(plugin)
            components = _components_from(pm, plugin, dist, version)
        except ArealError:
            raise
        except Exception as exc:  # noqa: BLE001
            registry.failures.append(PluginFailure(getattr(plugin, "__name__", str(plugin)), dist, f"{type(exc).__name__}: {exc}"))
            continue
        for c in components:
            registry.add(c)
    return registry


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests use this; None rebuilds on next use)."""
    global _REGISTRY
    _REGISTRY = registry
