"""Names from ``areal_core.plugin`` (the plugin boundary); the same names from ``areal_core.*``
until that surface is on main."""

try:
    from areal_core.plugin import ArealError, Component, ComponentConfig, WorkflowConfigBase, hookimpl
except ImportError:  # core before the plugin boundary
    from pydantic import Field

    from areal_core.config.base import ComponentConfig
    from areal_core.errors import ArealError
    from areal_core.hookspecs import hookimpl
    from areal_core.registry import Component

    class WorkflowConfigBase(ComponentConfig):
        """The sampling fields core reads from a workflow config (``areal_core.plugin`` has it after the boundary)."""

        temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy)")
        n_samples: int = Field(1, ge=1, description="completions per prompt (one group)")

__all__ = ["ArealError", "Component", "ComponentConfig", "WorkflowConfigBase", "hookimpl"]
