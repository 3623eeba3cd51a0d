"""Installs the test-only CPU shim for megatron-core in subprocesses the tests start (see tests/cpu_shim.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cpu_shim

cpu_shim.install()
