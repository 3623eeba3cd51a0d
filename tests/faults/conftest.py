"""Fault tests reuse the in-test inference backend of the rollout tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rollout"))
