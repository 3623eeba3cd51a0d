"""The ``sglang`` inference backend: the argv of ``sglang.launch_server``; the wire methods are
:class:`~areal_sglang.protocol.SGLangProtocol`'s."""

from __future__ import annotations

import sys
from typing import Any, Literal

from pydantic import Field, model_validator

from areal_core.plugin import InferenceConfigBase
from areal_sglang.protocol import SGLangProtocol


class SGLangConfig(InferenceConfigBase):
    """Options of ``python -m sglang.launch_server`` that areal sets; anything else goes in ``extra_args``."""

    python: str = Field("", description="interpreter whose environment has sglang installed; empty: this one")
    dtype: str = Field("auto", description="model dtype (--dtype): auto, bfloat16, float16, float32")
    mem_fraction_static: float | None = Field(None, gt=0, le=1, description="GPU memory share for weights + KV cache")
    context_length: int | None = Field(None, ge=1, description="context length cap (--context-length)")
    max_running_requests: int | None = Field(None, ge=1, description="most requests decoded together")
    random_seed: int = Field(0, description="server sampling seed (--random-seed)")
    weight_version: int = Field(0, ge=0, description="weight version reported before any update (--weight-version)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("warning", description="server log level")
    extra_args: list[str] = Field(default_factory=list, description="further launch_server flags, passed as given")

    @model_validator(mode="before")
    @classmethod
    def _renamed_tp_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tp_size" in data:
            raise ValueError(f"tp_size={data['tp_size']!r} is now tensor_parallel_size (or the t of "
                             f"scheduler.allocation, e.g. 'sglang:d2t{data['tp_size']}+fsdp:d4')")
        return data


class SGLangBackend(SGLangProtocol):
    """Starts SGLang servers; generate/pause/resume/update_weights/health speak its native API.

    Runs the t, p and e of its allocation part (``--tp-size``, ``--pp-size``, ``--ep-size``)."""

    parallel_dims = frozenset("tpe")

    def __init__(self, config: SGLangConfig | None = None):
        self.config = config or SGLangConfig(name="sglang")

    def server_command(self, model_path: str, host: str, port: int) -> list[str]:
        c = self.config
        argv = [c.python or sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_path),
                "--host", host, "--port", str(port), "--tp-size", str(c.tensor_parallel_size),
                "--pp-size", str(c.pipeline_parallel_size), "--ep-size", str(c.expert_parallel_size), "--dtype", c.dtype,
                "--random-seed", str(c.random_seed), "--weight-version", str(c.weight_version), "--log-level", c.log_level]
        optional = {"--mem-fraction-static": c.mem_fraction_static, "--context-length": c.context_length,
                    "--max-running-requests": c.max_running_requests}
        for flag, value in optional.items():
            if value is not None:
                argv += [flag, str(value)]
        return argv + list(c.extra_args)
