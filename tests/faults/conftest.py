"""Fault tests reuse the in-test inference backend of the rollout tests and the RL e2e helpers;
``log_text`` captures what areal logs during a test."""

import io
import sys
from pathlib import Path

import pytest

from areal_core.logging import configure_logging

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS / "rollout"))
sys.path.insert(0, str(TESTS / "e2e"))


@pytest.fixture
def log_text():
    out = io.StringIO()
    configure_logging(stream=out)
    yield out
    configure_logging(stream=io.StringIO())
