"""The base of every contract suite: what any component of any kind must satisfy.

A contract suite is a class of pytest tests that a plugin's own test module subclasses, naming
the component under test; pytest then runs every inherited test against it. Each kind has its
suite (``areal_core.testing.reward.RewardContract``, ``...metric_sink.MetricSinkContract``...),
built on :class:`ComponentContract`::

    from areal_core.testing.reward import RewardContract, RewardCase
    import areal_myreward.plugin

    class TestKeywordReward(RewardContract):
        plugin = areal_myreward.plugin          # registered temporarily, entry points ignored
        component_name = "keyword"
        component_config = {"keywords": ["42"]}
        cases = [RewardCase("2*21?", "42", {}, 1.0)]

The component is built the way a run builds it: looked up by name in a registry, its section
validated by the config model its record names, its factory called with the kind's
dependencies (the ``dependencies`` fixture). Override the ``component`` fixture to build it
any other way.

Suites never use ``async def`` tests (they run whatever ``asyncio_mode`` the plugin's pytest
configuration has); coroutine checks go through :func:`run_async`.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, ClassVar

import pytest

from areal_core.api.protocols import protocol_members
from areal_core.config.base import ComponentConfig, validate_section
from areal_core.errors import ArealError
from areal_core.registry import (
    KINDS,
    Component,
    Registry,
    build_registry,
    get_registry,
    set_registry,
)


def run_async(awaitable):
    """Run a coroutine to completion from a synchronous test."""
    return asyncio.run(awaitable) if inspect.isawaitable(awaitable) else awaitable


class ComponentContract:
    """Checks shared by every kind: the record, its config model, and the protocol.

    Set by each kind's suite: ``kind`` (registry kind) and ``protocol`` (``areal_core.api`` class).
    Set by the plugin's test class: ``component_name``, ``component_config`` (the section
    without ``name``) and ``plugin`` (the module with the ``@hookimpl`` functions; None means the
    installed plugins, found through entry points).
    """

    kind: ClassVar[str] = ""
    protocol: ClassVar[type] = object

    component_name: ClassVar[str] = ""
    component_config: ClassVar[dict[str, Any]] = {}
    plugin: ClassVar[Any] = None

    @pytest.fixture
    def registry(self):
        """A registry with the plugin under test, installed as the process-wide one meanwhile."""
        if self.plugin is None:
            registry = get_registry()
        else:
            registry = build_registry(extra_plugins=[(self.plugin, self._label())], entry_points=False)
        set_registry(registry)
        yield registry
        set_registry(None)

    @pytest.fixture
    def record(self, registry: Registry) -> Component:
        assert self.kind, f"{type(self).__name__}: a contract suite must set `kind`"
        assert self.component_name, f"{type(self).__name__}: set `component_name` to the registered name under test"
        if self.plugin is not None:
            self._check_plugin_registered(registry)
        return registry.get(self.kind, self.component_name)

    def _check_plugin_registered(self, registry: Registry) -> None:
        """The plugin under test is given: a missing name is its fault, not a missing install."""
        label, hook = KINDS[self.kind].label, KINDS[self.kind].hook
        plugin_name = getattr(self.plugin, "__name__", type(self.plugin).__name__)  # as the registry records it
        mine = [c.name for c in registry.by_kind(self.kind) if c.plugin == plugin_name]
        if self.component_name in mine:
            return
        where = f"{type(self).__name__}: plugin {self._label()}"
        if not mine:
            pytest.fail(
                f"{where} registered no {label}: check that it defines `@hookimpl def {hook}()` (that exact name, "
                f"decorated with `hookimpl` from areal_core.plugin) returning a list of Component records",
                pytrace=False,
            )
        pytest.fail(f"{where} registers the {label}s {', '.join(mine)}, not {self.component_name!r}: "
                    "check `component_name` and the Component's name", pytrace=False)

    def _label(self) -> str:
        return f"{getattr(self.plugin, '__name__', type(self.plugin).__name__)} (under test)"

    @pytest.fixture
    def config(self, record: Component) -> ComponentConfig:
        """The component's section, validated by its registered config model."""
        model = record.load_config_model()
        return validate_section(model, {"name": record.name, **self.component_config}, path=self.kind)

    @pytest.fixture
    def dependencies(self) -> dict[str, Any]:
        """Keyword arguments the kind's factory takes after the config (see ``areal_core.hookspecs``)."""
        return {}

    @pytest.fixture
    def component(self, record: Component, config: ComponentConfig, dependencies: dict[str, Any]):
        return record.load_factory()(config, **dependencies)

    # -- the record ---------------------------------------------------------------------------

    def test_record_has_one_line_summary(self, record: Component):
        assert record.summary.strip(), f"{self.kind} {record.name!r}: the Component record needs a summary (`areal plugins` shows it)"
        assert "\n" not in record.summary, f"{self.kind} {record.name!r}: the summary must fit on one line"

    def test_factory_and_config_model_import(self, record: Component):
        assert callable(record.load_factory()), f"{self.kind} {record.name!r}: factory {record.factory!r} is not callable"
        model = record.load_config_model()
        assert isinstance(model, type) and issubclass(model, ComponentConfig), (
            f"{self.kind} {record.name!r}: config model {record.config!r} must subclass areal_core.config.base.ComponentConfig"
        )

    def test_config_fields_are_described(self, record: Component):
        model = record.load_config_model()
        undocumented = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
        assert not undocumented, f"{model.__name__}: fields without a description: {undocumented}"

    def test_config_defaults_validate(self, record: Component, config: ComponentConfig):
        assert config.name == record.name

    def test_config_rejects_unknown_keys(self, record: Component):
        model = record.load_config_model()
        with pytest.raises(ArealError, match=rf"{self.kind}\.no_such_option_xyz"):
            validate_section(model, {"name": record.name, **self.component_config, "no_such_option_xyz": 1}, path=self.kind)

    # -- the component ------------------------------------------------------------------------

    def test_component_satisfies_protocol(self, component):
        missing = [m for m in protocol_members(self.protocol) if not hasattr(component, m)]
        assert not missing, f"{type(component).__name__} lacks {self.protocol.__name__} members: {missing}"
        assert isinstance(component, self.protocol)
