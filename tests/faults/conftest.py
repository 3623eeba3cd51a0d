"""Fault tests reuse the in-test inference backend of the rollout tests and the RL e2e helpers."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS / "rollout"))
sys.path.insert(0, str(TESTS / "e2e"))
