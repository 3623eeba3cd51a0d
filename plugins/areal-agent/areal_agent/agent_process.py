"""Runs a user's agent function in its own process: ``python -m areal_agent.agent_process module:function``.

The sample arrives as JSON on stdin; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` in the environment
point at the episode's proxy session. The function's return value is printed as JSON on the last
line of stdout (the ``agent`` workflow reads it as the reward).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from areal_core.plugin import ArealError


def load_function(spec: str, field: str = "workflow.agent") -> Callable[..., Any]:
    """The callable named by ``"module:function"``; ArealError naming ``field`` otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ArealError(f"{field}: expected 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArealError(f"{field}: cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ArealError(f"{field}: {module_name!r} has no function {attr!r}")
    if not inspect.iscoroutinefunction(fn):
        raise ArealError(f"{field}: {spec} must be 'async def run(sample, base_url, api_key)'")
    return fn


def main() -> None:
    fn = load_function(sys.argv[1])
    sample = json.loads(sys.stdin.read() or "{}")
    value = asyncio.run(fn(sample, os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]))
    print(json.dumps(value), flush=True)


if __name__ == "__main__":
    main()
