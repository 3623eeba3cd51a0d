"""Full tensors of a tensor/pipeline/expert-parallel megatron model, gathered bucket by bucket.

Every rank holds shards: a tensor-parallel rank a slice of each split weight, a pipeline stage
its layers, an expert-parallel rank its experts. :func:`stream` yields the model's full tensors
under global megatron names on rank 0 in *buckets* of at most ``limit`` bytes (a larger tensor
is a bucket of its own), so rank 0 holds about one bucket at a time instead of the whole model:

1. :func:`plan` (collective over the pipeline group, metadata only): every stage lists its
   parameters as :class:`Unit` s (global names, full shapes, bytes); all stages agree on the
   same ordered list, cut into buckets by :func:`buckets`.
2. Per bucket, each stage gathers its own units: an all-gather over the (expert) tensor-parallel
   group, then for expert weights over the expert-parallel group.
3. The ranks with tensor-parallel and data-parallel rank 0 (one per stage: the pipeline group of
   global rank 0) send the units of stages > 0 to the first stage point to point, in plan order.

Collective: every rank must iterate :func:`stream` to the end; other ranks get empty buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from areal_megatron import sharding


@dataclass(frozen=True)
class Unit:
    """One local parameter of pipeline stage ``stage``: the full tensors it gathers into (one, or
    one per expert-parallel rank for a routed expert's weight) as (global name, full shape)."""

    stage: int
    local: str
    tensors: tuple[tuple[str, tuple[int, ...]], ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        size = torch.empty((), dtype=self.dtype).element_size()
        return sum(size * int(torch.Size(shape).numel()) for _, shape in self.tensors)


def _full_shape(name: str, param: torch.Tensor, vocab: int) -> tuple[int, ...]:
    shape = list(param.shape)
    size, _, _ = sharding.Placement.tensor_split(name)
    if size > 1 and getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= size  # type: ignore[attr-defined]  # set by megatron's parallel layers
    if name in sharding.VOCAB:
        shape[0] = vocab
    return tuple(shape)


def plan(model: torch.nn.Module, lay, vocab: int, skip: Callable[[str], bool]) -> list[Unit]:
    """Every stage's units, in stage order (identical on every rank). Collective over the
    pipeline-parallel group. ``skip(local name)``: parameters that yield nothing (a tied copy)."""
    from megatron.core import parallel_state as ps

    place = sharding.Placement.current(lay)
    per_expert_rank = lay.num_experts // place.expert_parallel if lay.num_experts else 0
    stage = ps.get_pipeline_model_parallel_rank()
    mine = []
    for name, param in model.named_parameters():
        if skip(name):
            continue
        shape = _full_shape(name, param, vocab)
        offsets = [r * per_expert_rank for r in range(place.expert_parallel)] if sharding.is_expert(name) else [None]
        mine.append(Unit(stage, name, tuple((place.global_name(name, o), shape) for o in offsets), param.dtype))
    stages: list = [None] * ps.get_pipeline_model_parallel_world_size()
    dist.all_gather_object(stages, mine, group=ps.get_pipeline_model_parallel_group())
    return [unit for part in stages for unit in part]


def buckets(units: list[Unit], limit: int) -> list[list[Unit]]:
    """Consecutive units in groups of at most ``limit`` bytes (a larger unit alone)."""
    out: list[list[Unit]] = []
    held = limit + 1
    for unit in units:
        if held + unit.nbytes > limit:
            out.append([])
            held = 0
        out[-1].append(unit)
        held += unit.nbytes
    return out


def _gather_unit(unit: Unit, param: torch.Tensor, local: torch.Tensor, vocab: int) -> list[torch.Tensor]:
    """The full tensors of ``unit`` from this rank's ``local`` part (collective over its groups)."""
    from megatron.core import parallel_state as ps

    size, _, group = sharding.Placement.tensor_split(unit.local)
    full = sharding.unpad(unit.local, sharding.gather(unit.local, local, param, size, group, gated=True), vocab)
    if len(unit.tensors) == 1:
        return [full]
    parts = [torch.empty_like(full) for _ in unit.tensors]
    dist.all_gather(parts, full.contiguous(), group=ps.get_expert_model_parallel_group())
    return parts


def stream(model: torch.nn.Module, lay, vocab: int, of: Callable[[torch.Tensor], torch.Tensor], limit: int,
           skip: Callable[[str], bool]) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Buckets of (global megatron name, full tensor of ``of(parameter)``) on global rank 0; empty
    lists elsewhere. Collective on every rank. Holds no tensor between buckets (empty each list
    you receive, e.g. with ``pop``, to free a bucket before the next is gathered)."""
    from megatron.core import parallel_state as ps

    place = _Place(
        stage=ps.get_pipeline_model_parallel_rank(),
        collects=ps.get_tensor_model_parallel_rank() == 0 and ps.get_data_parallel_rank() == 0,
        stage_ranks=dist.get_process_group_ranks(ps.get_pipeline_model_parallel_group())
        if ps.get_pipeline_model_parallel_world_size() > 1 else [dist.get_rank()])
    params = dict(model.named_parameters())
    for bucket in buckets(plan(model, lay, vocab, skip), limit):
        yield _bucket(bucket, place, params, of, vocab)


@dataclass(frozen=True)
class _Place:
    stage: int  # this rank's pipeline stage
    collects: bool  # tensor- and data-parallel rank 0: in the pipeline group of global rank 0
    stage_ranks: list[int]  # global rank of each stage in this rank's pipeline group


def _bucket(bucket: list[Unit], place: _Place, params: Mapping[str, torch.Tensor],
            of: Callable[[torch.Tensor], torch.Tensor], vocab: int) -> list[tuple[str, torch.Tensor]]:
    """One bucket's full tensors on global rank 0 ([] elsewhere)."""
    held = {unit.local: _gather_unit(unit, params[unit.local], of(params[unit.local]).detach(), vocab)
            for unit in bucket if unit.stage == place.stage}
    out: list[tuple[str, torch.Tensor]] = []
    if not place.collects:
        return out
    device = next(iter(params.values())).device
    for unit in bucket:
        if place.stage == 0:
            if unit.stage == 0:
                tensors = held.pop(unit.local)
            else:
                tensors = [torch.empty(shape, dtype=unit.dtype, device=device) for _, shape in unit.tensors]
                for t in tensors:
                    dist.recv(t, src=place.stage_ranks[unit.stage])
            out.extend(zip((n for n, _ in unit.tensors), tensors))
        elif unit.stage == place.stage:
            for t in held.pop(unit.local):
                dist.send(t.contiguous(), dst=place.stage_ranks[0])
    return out if dist.get_rank() == 0 else []
