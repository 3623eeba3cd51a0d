"""Fixtures of the rollout tests; the in-test backend itself lives in rollout_fakes.py."""

import pytest

from rollout_fakes import ScriptedBackend


@pytest.fixture
def make_backend():
    """``make_backend(addrs=..., step_s=..., report_versions=...)`` -> ScriptedBackend."""
    return ScriptedBackend


@pytest.fixture
def backend():
    return ScriptedBackend()
