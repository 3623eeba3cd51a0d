"""Allocation strings: syntax, binding to the run's components, derived layout, shorthands."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from areal_core.api.types import ParallelLayout, RunContext
from areal_core.config.allocation import apply_allocation, bind, layout_of, parse_allocation, require_parallel_support
from areal_core.config.base import (
    ComponentConfig,
    InferenceConfigBase,
    SchedulerConfigBase,
)
from areal_core.config.loader import ResolvedConfig
from areal_core.errors import ArealError

NAMES = {"inference": "vllm", "actor": "fsdp"}


@pytest.mark.parametrize("text, servers, gpus_per_server, ranks, spec", [
    ("vllm:d2t1+fsdp:d4", 2, 1, 4, "inference=vllm:d2+actor=fsdp:d4"),
    ("vllm:d4t2+fsdp:d8", 4, 2, 8, "inference=vllm:d4t2+actor=fsdp:d8"),
    ("fsdp:d2t2p2c2+vllm:d1", 1, 1, 16, "actor=fsdp:d2t2p2c2+inference=vllm:d1"),
    ("vllm:t2p2d3+fsdp:d1", 3, 4, 1, "inference=vllm:d3t2p2+actor=fsdp:d1"),
    (" VLLM:D2 + FSDP:D2 ", 2, 1, 2, "inference=vllm:d2+actor=fsdp:d2"),
    ("inference=vllm:d1+actor=fsdp:d3", 1, 1, 3, "inference=vllm:d1+actor=fsdp:d3"),
    ("vllm:t4+fsdp:p2", 1, 4, 2, "inference=vllm:d1t4+actor=fsdp:d1p2"),
])
def test_valid_strings_give_the_layout(text, servers, gpus_per_server, ranks, spec):
    alloc = bind(parse_allocation(text), NAMES)
    assert alloc.n_servers == servers
    assert alloc.role("inference").devices_per_process == gpus_per_server
    assert alloc.role("inference").world_size == servers * gpus_per_server
    assert alloc.trainer_ranks == ranks == alloc.role("actor").processes
    assert alloc.spec() == spec
    assert bind(parse_allocation(alloc.spec()), NAMES).spec() == spec  # canonical text round-trips


@pytest.mark.parametrize("text, fault", [
    ("d2p2", "part 'd2p2' has no backend"),
    ("vllm:d2+d4", "part 'd4' has no backend"),
    ("", "empty"),
    ("vllm:d2++fsdp:d2", "empty part"),
    ("vllm:d2+fsdp:d2+fsdp:d4", "'fsdp' appears twice"),
    ("vllm:d2x4+fsdp:d1", "unknown parallel dim 'x'"),
    ("vllm:d2d4+fsdp:d1", "'d' given twice"),
    ("vllm:d0+fsdp:d1", "d0 must be at least 1"),
    ("vllm:2+fsdp:d1", "not LETTER+NUMBER pairs"),
    ("vllm:dd+fsdp:d1", "part 'vllm:dd'"),
    ("critic=fsdp:d2+vllm:d1", "unknown role 'critic'"),
    ("vllm:d2:t2", "part 'vllm:d2:t2' is not"),
])
def test_syntax_errors_name_the_part(text, fault):
    with pytest.raises(ArealError, match="scheduler.allocation") as err:
        parse_allocation(text)
    assert fault in str(err.value)


@pytest.mark.parametrize("text, fault", [
    ("sglang:d2+fsdp:d2", "backend 'sglang' is none of the run's components"),
    ("vllm:d2", "no actor component: add '+fsdp:d1'"),
    ("fsdp:d2", "no inference component"),
    ("actor=vllm:d2+fsdp:d1", "role actor is configured as 'fsdp', not 'vllm'"),
    ("vllm:d2+inference=vllm:d1+fsdp:d1", "two components for the same role (inference)"),
    ("vllm:d1c2+fsdp:d1", "context parallel (c) is a training layout"),
    ("vllm:d1+fsdp:d2e2", "e2 needs a model with experts"),
    ("vllm:d1+fsdp:d3e2", "e2 must divide the data×context ranks d·c = 3"),
])
def test_binding_errors_name_the_part(text, fault):
    with pytest.raises(ArealError) as err:
        bind(parse_allocation(text), NAMES)
    assert fault in str(err.value)


def test_expert_parallel_needs_experts_in_the_model(tmp_path):
    dense, moe = tmp_path / "dense", tmp_path / "moe"
    for path, config in ((dense, {"model_type": "qwen2"}), (moe, {"model_type": "qwen3_moe", "num_experts": 8})):
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArealError, match=r"part 'fsdp:d2e2': e2 needs a model with experts, and .*dense"):
        bind(parse_allocation("vllm:d1+fsdp:d2e2"), NAMES, dense)
    assert bind(parse_allocation("vllm:d1e2+fsdp:d2e2"), NAMES, moe).trainer_ranks == 2
    with pytest.raises(ArealError, match="e16 must divide the model's 8 experts"):
        bind(parse_allocation("vllm:d1+fsdp:d16e16"), NAMES, moe)


def test_require_names_every_part_and_the_cluster():
    alloc = bind(parse_allocation("vllm:d2t2+fsdp:d4"), NAMES)
    alloc.require("GPUs", 8, "the cluster", lambda c: c.devices_per_process)
    with pytest.raises(ArealError) as err:
        alloc.require("GPUs", 6, "Ray cluster 10.0.0.1:6379", lambda c: c.devices_per_process)
    assert str(err.value) == ("scheduler.allocation 'inference=vllm:d2t2+actor=fsdp:d4' needs 8 GPUs "
                              "(inference=vllm:d2t2: 4, actor=fsdp:d4: 4) but Ray cluster 10.0.0.1:6379 has 6: "
                              "shrink the allocation or grow the cluster")


def _resolved(scheduler: dict, inference: dict, model_path: str = "/nonexistent") -> ResolvedConfig:
    return ResolvedConfig(
        run=SimpleNamespace(model_path=model_path),
        components={"scheduler": SchedulerConfigBase(name="ray", **scheduler),
                    "inference": InferenceConfigBase(name="vllm", **inference),
                    "actor": ComponentConfig(name="fsdp")})


def test_shorthands_are_an_allocation():
    cfg = _resolved({"trainer_ranks": 3}, {"n_servers": 2})
    alloc = apply_allocation(cfg)
    assert (alloc.n_servers, alloc.trainer_ranks) == (2, 3)
    assert cfg.components["scheduler"].allocation == "inference=vllm:d2+actor=fsdp:d3"


def test_allocation_writes_the_shorthands_back():
    cfg = _resolved({"allocation": "vllm:d2t2+fsdp:d4"}, {})
    apply_allocation(cfg)
    assert cfg.components["inference"].n_servers == 2
    assert cfg.components["scheduler"].trainer_ranks == 4
    assert cfg.components["scheduler"].allocation == "inference=vllm:d2t2+actor=fsdp:d4"
    again = _resolved({"allocation": "inference=vllm:d2t2+actor=fsdp:d4", "trainer_ranks": 4}, {"n_servers": 2})
    assert apply_allocation(again).spec() == "inference=vllm:d2t2+actor=fsdp:d4"  # a resolved config reloads


def test_the_inference_part_reaches_the_backend_config():
    cfg = _resolved({"allocation": "vllm:d2t4p2+fsdp:d2"}, {})
    apply_allocation(cfg)
    inference = cfg.components["inference"]
    assert (inference.n_servers, inference.tensor_parallel_size, inference.pipeline_parallel_size,
            inference.expert_parallel_size) == (2, 4, 2, 1)


def test_server_sizes_are_a_shorthand_too():
    cfg = _resolved({"trainer_ranks": 2}, {"n_servers": 2, "tensor_parallel_size": 2})
    assert apply_allocation(cfg).spec() == "inference=vllm:d2t2+actor=fsdp:d2"


def test_the_actor_part_is_the_engines_layout():
    cfg = _resolved({"allocation": "vllm:d1+fsdp:d2t2p2"}, {})
    apply_allocation(cfg)
    layout = layout_of(cfg, "actor", world_size=8)
    assert layout == ParallelLayout(data=2, tensor=2, pipeline=2, part="actor=fsdp:d2t2p2")
    assert layout.world_size == 8 and layout.model_parallel() == {"t": 2, "p": 2}
    no_allocation = ResolvedConfig(run=SimpleNamespace(), components={"actor": ComponentConfig(name="fsdp")})
    assert layout_of(no_allocation, "actor", world_size=3) == ParallelLayout(data=3)
    assert RunContext("m", 0, 1, Path("."), rank=1, world_size=3).parallel == ParallelLayout(data=3)
    with pytest.raises(ValueError, match="has 8 ranks, world_size is 4"):
        RunContext("m", 0, 1, Path("."), rank=0, world_size=4, parallel=layout)


class _TensorParallelEngine:
    parallel_dims = frozenset("tp")


def test_a_component_runs_only_the_dims_it_declares():
    layout = ParallelLayout(data=2, tensor=2, part="actor=fsdp:d2t2")
    with pytest.raises(ArealError) as err:
        require_parallel_support(object(), "train engine 'fsdp' (actor)", layout)
    assert str(err.value).startswith("scheduler.allocation part 'actor=fsdp:d2t2': train engine 'fsdp' (actor) cannot "
                                     "run t2 (tensor parallel); it supports data parallel (d) only")
    require_parallel_support(_TensorParallelEngine(), "train engine 'megatron'", layout)
    require_parallel_support(object(), "train engine 'fsdp'", ParallelLayout(data=4))  # data parallel: everyone
    with pytest.raises(ArealError, match=r"cannot run c2 \(context parallel\), e2 \(expert parallel\); it supports p, t"):
        require_parallel_support(_TensorParallelEngine(), "train engine 'megatron'",
                                 ParallelLayout(data=2, tensor=2, context=2, expert=2, part="actor=megatron:d2t2c2e2"))


@pytest.mark.parametrize("scheduler, inference, fault", [
    ({"allocation": "vllm:d2+fsdp:d4", "trainer_ranks": 2}, {}, "scheduler.trainer_ranks=2 contradicts"),
    ({"allocation": "vllm:d2+fsdp:d4"}, {"n_servers": 3}, "inference.n_servers=3 contradicts"),
    ({"allocation": "vllm:d2t2+fsdp:d4"}, {"tensor_parallel_size": 4}, "inference.tensor_parallel_size=4 contradicts"),
])
def test_a_contradicting_shorthand_is_an_error(scheduler, inference, fault):
    with pytest.raises(ArealError, match=fault):
        apply_allocation(_resolved(scheduler, inference))


def test_syntax_is_checked_when_the_config_loads():
    from areal_core.config.base import validate_section

    with pytest.raises(ArealError, match=r"scheduler.allocation: .*part 'd2p2' has no backend"):
        validate_section(SchedulerConfigBase, {"name": "ray", "allocation": "d2p2"}, "scheduler")
