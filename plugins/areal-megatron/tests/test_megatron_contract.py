"""The train-engine contract suite, run against the megatron engine (one process, t = p = 1)."""

import pytest

import areal_megatron.plugin
from areal_core.testing.train_engine import TrainEngineContract

pytestmark = pytest.mark.timeout(300)


class TestMegatronEngineContract(TrainEngineContract):
    plugin = areal_megatron.plugin
    component_name = "megatron"
    component_config = {"optimizer": {"lr": 1e-2}, "max_tokens_per_mb": 48}
