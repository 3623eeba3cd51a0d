"""Plugin discovery and the one generic registry that serves every component kind.

Discovery loads each module named by an entry point in the ``areal`` group, registers it with a
pluggy ``PluginManager`` and calls the ``areal_register_*`` hooks. What can go wrong, and what
the user sees:

==================================== ==========================================================
plugin import or hook raises         recorded in ``failures``: ``areal plugins`` lists it, and an
                                     unknown-name error names it (never silently skipped)
a hook areal never calls             ArealError when the registry is built, naming the plugin,
(misspelled, no ``@hookimpl``)       the function and the closest hook name
a name registered twice              recorded in ``conflicts``: ``areal plugins`` lists it; only
                                     using that name fails ("uninstall one of A, B" / "rename")
a config model default of the wrong  ArealError when the component's config model is loaded,
type                                 naming the plugin, the model and the field
unknown name                         ArealError naming the kind, the available names, the
                                     closest match, the package that provides it
                                     (``first_party.json``) and the plugins that failed to load
==================================== ==========================================================
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from areal_core import hookspecs
from areal_core.errors import ArealError

ENTRY_POINT_GROUP = "areal"
CORE_DISTRIBUTION = "areal-core"


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

@dataclass(frozen=True)
class Component:
    """What a provider hook returns for one component.

    ``factory`` and ``config`` are ``"module:attr"`` strings (or the objects themselves), imported
    only when the component is used. ``config`` is a pydantic model class validating the
    component's config section, or None when it takes no options. The registry fills ``kind``,
    ``distribution``, ``version`` and ``plugin`` (the module that registered it).
    """

    name: str
    factory: Any
    config: Any = None
    summary: str = ""
    kind: str = ""
    distribution: str = ""
    version: str = ""
    plugin: str = ""

    @property
    def origin(self) -> str:
        """Who registered it, for error messages: ``plugin areal_x.plugin (areal-x 0.1.0)``."""
        dist = f"{self.distribution} {self.version}".strip() or "?"
        return f"plugin {self.plugin} ({dist})" if self.plugin else dist

    def load_factory(self):
        return _resolve(self.factory, f"{self.kind} {self.name!r} factory")

    def load_config_model(self):
        """The config model class, its field defaults checked against their types."""
        from pydantic import BaseModel

        from areal_core.config.base import ComponentConfig
        from areal_core.config.defaults import default_errors

        if self.config is None:
            return ComponentConfig
        model = _resolve(self.config, f"{self.kind} {self.name!r} config model")
        bad = default_errors(model) if isinstance(model, type) and issubclass(model, BaseModel) else ()
        if bad:
            raise ArealError(
                f"{self.kind} {self.name!r} from {self.origin}: config model {_reference(self.config)} has defaults its "
                "own field types reject (fix the plugin):\n  " + "\n  ".join(bad)
            )
        return model


@dataclass(frozen=True)
class PluginFailure:
    """A plugin whose import or registration failed, kept for ``areal plugins`` and errors."""

    entry_point: str
    distribution: str
    error: str


@dataclass(frozen=True)
class Conflict:
    """One (kind, name) registered more than once: the name is unusable, every other name works."""

    kind: str
    name: str
    components: tuple[Component, ...]

    @property
    def fix(self) -> str:
        """What the user does: uninstall one distribution, or rename within the one package."""
        label = KINDS[self.kind].label
        dists = list(dict.fromkeys(c.distribution for c in self.components))
        removable = [d for d in dists if d != CORE_DISTRIBUTION]
        if len(dists) == 1:
            return f"both registrations come from {dists[0]}: rename one of them in that package"
        if len(removable) == len(dists):
            return f"uninstall one of {', '.join(dists)}"
        return f"areal-core's built-in {label} keeps the name: uninstall {', '.join(removable)} or rename its {label}"

    def message(self) -> str:
        by = " and by ".join(f"{c.origin} ({_reference(c.factory)})" for c in self.components)
        return f"{KINDS[self.kind].label} name {self.name!r} is registered {len(self.components)} times: by {by}; {self.fix}"


@dataclass
class Registry:
    """Every component of every kind, keyed by (kind, name).

    A name registered twice goes to ``conflicts`` instead: ``areal plugins`` lists it and only a
    run that uses that name fails. ``distributions`` maps each loaded plugin distribution to its
    version.
    """

    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    conflicts: dict[tuple[str, str], Conflict] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    distributions: dict[str, str] = field(default_factory=dict)
    plugin_manager: pluggy.PluginManager | None = None

    def add(self, component: Component) -> None:
        key = (component.kind, component.name)
        if key in self.conflicts:
            old = self.conflicts[key]
            self.conflicts[key] = replace(old, components=(*old.components, component))
        elif key in self.components:
            self.conflicts[key] = Conflict(component.kind, component.name, (self.components.pop(key), component))
        else:
            self.components[key] = component

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.components if k == kind)

    def by_kind(self, kind: str) -> list[Component]:
        return [self.components[(kind, n)] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise ArealError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if (kind, name) in self.conflicts:
            raise ArealError(self.conflicts[(kind, name)].message())
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
        from areal_core import first_party

        label = KINDS[kind].label
        available = self.names(kind)
        first = first_party.providers(kind)
        lines = [f"unknown {label} {name!r}."]
        lines.append(f"  available {label}s: {', '.join(available) if available else '(none installed)'}")
        close = difflib.get_close_matches(name, sorted({*available, *first} - {name}), n=1)
        if close:
            hint = "" if close[0] in available else f" (provided by {first[close[0]]}: {first_party.install_hint(first[close[0]])})"
            lines.append(f"  did you mean {close[0]!r}?{hint}")
        for other in (c for (k, n), c in self.components.items() if n == name and k != kind):
            lines.append(f"  {name!r} is a {KINDS[other.kind].label} (from {other.distribution}), not a {label}")
        dist = first.get(name)
        failed = {f.distribution.split()[0] for f in self.failures}
        if dist in self.distributions:
            installed = f"{dist} {self.distributions[dist]}".strip()
            lines.append(f"  {name!r} is provided by {dist}, but the installed {installed} "
                         f"does not register it: upgrade it ({first_party.install_hint(dist)})")
        elif dist in failed:
            lines.append(f"  {name!r} is provided by {dist}, which is installed but failed to load (below)")
        elif dist:
            lines.append(f"  {name!r} is provided by {dist}: {first_party.install_hint(dist)}")
        else:
            lines.append("  if a plugin provides it, install that plugin (pip install <plugin>) and check `areal plugins`")
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
    except Exception as exc:  # reported with the reference that failed
        raise ArealError(f"cannot import {what} {ref!r}: {type(exc).__name__}: {exc}") from exc
    return obj


def _reference(ref) -> str:
    """A factory or model as ``module:attr``, whether given as that string or as the object."""
    if isinstance(ref, str):
        return ref
    return f"{getattr(ref, '__module__', '?')}:{getattr(ref, '__qualname__', type(ref).__qualname__)}"


# -- hooks a plugin defines but pluggy would never call ---------------------------------------


def hook_errors(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Each hook function of a registered ``plugin`` that areal would never call.

    The same check as pluggy's ``check_pending`` (a ``@hookimpl`` whose name no hook spec has),
    for one plugin and every such function at once, plus the hook-like functions that lack
    ``@hookimpl`` (pluggy does not see those at all). Each names the closest valid hook.
    """
    hooks = sorted(n for n, caller in vars(pm.hook).items() if isinstance(caller, pluggy.HookCaller) and caller.has_spec())
    callers = pm.get_hookcallers(plugin) or []
    errors = [_unknown_hook(c.name, hooks) for c in callers if not c.has_spec()]
    marked = {c.name for c in callers}
    for attr in sorted(dir(plugin)):
        if attr in marked or not _looks_like_a_hook(attr, hooks) or not inspect.isroutine(getattr(plugin, attr, None)):
            continue
        if attr in hooks:
            errors.append(f"`{attr}` lacks @hookimpl, so areal never calls it: decorate it with "
                          "`hookimpl` from areal_core.plugin")
        else:
            errors.append(_unknown_hook(attr, hooks) + "; it also lacks @hookimpl")
    return errors


def _looks_like_a_hook(name: str, hooks: list[str]) -> bool:
    """An undecorated function meant as a hook: ``areal_register_*``, or a near miss of a hook
    name. Other ``areal_*`` helpers of a plugin module are left alone (a ``@hookimpl`` on any
    unknown name is always an error)."""
    return name.startswith("areal_register") or bool(difflib.get_close_matches(name, hooks, n=1, cutoff=0.8))


def _unknown_hook(name: str, hooks: list[str]) -> str:
    close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.6)
    guess = f"; did you mean `{close[0]}`?" if close else f"; areal's hooks are {', '.join(hooks)}"
    return f"`{name}` is not an areal hook{guess}"


def _hook_error_message(bad: list[tuple[str, list[str]]]) -> str:
    lines = ["plugins define hooks that areal would never call (fix the plugin or uninstall its distribution):"]
    for where, errors in bad:
        lines += [f"  {where}: {e}" for e in errors]
    return "\n".join(lines)


# -- discovery --------------------------------------------------------------------------------


def _components_from(pm: pluggy.PluginManager, plugin, dist: str, version: str, plugin_name: str) -> list[Component]:
    found = []
    for kind in KINDS.values():
        hook_impls = [i for i in getattr(pm.hook, kind.hook).get_hookimpls() if i.plugin is plugin]
        for impl in hook_impls:
            for c in impl.function() or []:
                found.append(replace(c, kind=kind.name, distribution=dist, version=version, plugin=plugin_name))
    return found


def build_registry(extra_plugins: Sequence[tuple[object, str]] = (), entry_points: bool = True) -> Registry:
    """Discover every plugin and return a fresh registry.

    ``extra_plugins``: (module-or-object, distribution label) pairs registered after the
    built-ins, as tests do to add temporary plugins. ``entry_points=False`` skips installed plugins.

    A plugin that fails to import, or whose hook raises, is recorded in ``failures``; a name
    registered twice is recorded in ``conflicts``. A plugin that defines a hook
    areal would never call (misspelled, unknown, or without ``@hookimpl``) raises ArealError
    naming every such hook of every plugin, with the closest valid name: it would otherwise
    register nothing, silently.
    """
    pm = pluggy.PluginManager("areal")
    pm.add_hookspecs(hookspecs)
    registry = Registry(plugin_manager=pm)
    plugins: list[tuple[object, str, str, str]] = [
        (importlib.import_module("areal_core.builtins"), CORE_DISTRIBUTION, _version(CORE_DISTRIBUTION), "areal_core.builtins")
    ]

    if entry_points:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else ""
            try:
                plugins.append((ep.load(), dist, version, ep.value))
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                registry.failures.append(PluginFailure(ep.name, f"{dist} {version}".strip(), f"{type(exc).__name__}: {exc}"))
    plugins += [(p, label, "", getattr(p, "__name__", type(p).__name__)) for p, label in extra_plugins]

    bad_hooks: list[tuple[str, list[str]]] = []
    for plugin, dist, version, plugin_name in plugins:
        where = f"plugin {plugin_name} ({f'{dist} {version}'.strip()})"
        try:
            if pm.is_registered(plugin):
                continue
            pm.register(plugin)
        except pluggy.PluginValidationError as exc:  # a hookimpl whose arguments the spec lacks
            detail = str(exc).splitlines()[1:]  # the first line names the plugin, as `where` does
            bad_hooks.append((where, ["; ".join(line.strip() for line in detail if line.strip())]))
            continue
        errors = hook_errors(pm, plugin)
        if errors:
            bad_hooks.append((where, errors))
            continue
        try:
            components = _components_from(pm, plugin, dist, version, plugin_name)
        except Exception as exc:  # noqa: BLE001
            registry.failures.append(PluginFailure(plugin_name, f"{dist} {version}".strip(), f"{type(exc).__name__}: {exc}"))
            continue
        if dist != CORE_DISTRIBUTION:
            registry.distributions.setdefault(dist, version)
        for c in components:
            registry.add(c)
    if bad_hooks:
        raise ArealError(_hook_error_message(bad_hooks))
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
