"""The inference-backend contract suite for the sglang backend.

Real SGLang needs a GPU, so the suite's server is areal's embedded server, which speaks the same
native protocol: what is checked is this backend's protocol client against that wire format,
plus the launch command it builds.
"""

import pytest

import areal_sglang.plugin
from areal_core.registry import build_registry
from areal_core.testing.inference_backend import (
    InferenceBackendContract,
    RunningServer,
    free_port,
    launched_server,
)


class TestSGLangBackend(InferenceBackendContract):
    plugin = areal_sglang.plugin
    component_name = "sglang"
    component_config = {"tensor_parallel_size": 1, "extra_args": ["--disable-radix-cache"]}
    supported_sync_paths = ("disk", "distributed")

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, served_model, tmp_path_factory):
        from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

        registry = build_registry(extra_plugins=[(cls.plugin, "under test")], entry_points=False)
        backend = registry.create(cls.kind, cls.component_name, dict(cls.component_config))
        port = free_port()
        addr = f"127.0.0.1:{port}"
        argv = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=8)).server_command(
            served_model, "127.0.0.1", port)
        with launched_server(argv, addr, cls.startup_timeout_s, cls.server_env, tmp_path_factory.mktemp("log") / "s.log"):
            yield RunningServer(addr, backend, served_model)


def test_launch_command_names_sglang_flags():
    from areal_sglang.backend import SGLangBackend, SGLangConfig

    config = SGLangConfig(name="sglang", python="/envs/sglang/bin/python", tensor_parallel_size=2,
                          pipeline_parallel_size=2, mem_fraction_static=0.8,
                          weight_version=3, extra_args=["--attention-backend", "fa3"])
    argv = SGLangBackend(config).server_command("/models/qwen", "0.0.0.0", 30001)
    assert argv[:3] == ["/envs/sglang/bin/python", "-m", "sglang.launch_server"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags["--model-path"] == "/models/qwen" and flags["--port"] == "30001" and flags["--tp-size"] == "2"
    assert flags["--pp-size"] == "2" and flags["--ep-size"] == "1"
    assert flags["--weight-version"] == "3" and flags["--mem-fraction-static"] == "0.8"
    assert argv[-2:] == ["--attention-backend", "fa3"]


def test_old_tp_size_gets_a_migration_error():
    from areal_sglang.backend import SGLangConfig

    with pytest.raises(ValueError, match="tp_size=2 is now tensor_parallel_size"):
        SGLangConfig(name="sglang", tp_size=2)
