"""areal-core: the asynchronous RL core. Importing it imports neither torch nor any plugin."""

from areal_core.errors import ArealError
from areal_core.hookspecs import hookimpl
from areal_core.registry import Component, get_registry

__all__ = ["ArealError", "Component", "get_registry", "hookimpl"]
__version__ = "0.1.0"
