"""Split full megatron tensors over tensor/pipeline-parallel ranks, and gather them back.

Tensor parallel: a parameter megatron marks ``tensor_model_parallel`` is split in
``tp`` contiguous chunks along its ``partition_dim`` (column-parallel layers and the
vocab-parallel embedding/output layer: dim 0; row-parallel ``linear_proj``/``linear_fc2``: dim 1);
everything else is replicated. The gated ``linear_fc1`` is the exception: its full tensor is
``[gate; up]`` while rank r holds ``[gate_r; up_r]`` (the activation halves the local output).

Pipeline parallel: stage s of p holds decoder layers ``s·n/p … (s+1)·n/p − 1`` under local
numbers from 0, the embedding on the first stage and the final norm and output layer on the last
(with tied embeddings the last stage holds a copy of the embedding as ``output_layer.weight``).

Expert parallel (e ranks): each rank of an expert-parallel group holds ``E/e`` of a layer's
``E`` experts, rank r the experts ``r·E/e … (r+1)·E/e − 1`` under local numbers from 0
(``mlp.experts.local_experts.{j}``); expert weights are split over the *expert* tensor-parallel
group (megatron's default: as large as t). :class:`Placement` maps local names to global ones.

Vocabulary: the embedding and output layer are padded with zero rows to a multiple of ``tp``
(:func:`padded_vocab`); :func:`unpad` drops them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")
_LOCAL_EXPERT = re.compile(r"\.local_experts\.(\d+)\.")
VOCAB = ("embedding.word_embeddings.weight", "output_layer.weight")


def is_expert(name: str) -> bool:
    """Whether megatron parameter ``name`` belongs to a routed expert (split over expert ranks)."""
    return ".local_experts." in name


@dataclass(frozen=True)
class Placement:
    """This rank's place in the model: its pipeline stage's ``layers`` (global numbers), the
    global number of its first local expert and its expert-parallel group."""

    layers: range
    expert_offset: int
    expert_parallel: int

    @classmethod
    def current(cls, lay: Any) -> Placement:
        """From megatron's initialised parallel state, for a :class:`~areal_megatron.convert.Layout`."""
        from megatron.core import parallel_state as ps

        pp, ep = ps.get_pipeline_model_parallel_world_size(), ps.get_expert_model_parallel_world_size()
        return cls(layers=layer_range(lay.num_layers, pp, ps.get_pipeline_model_parallel_rank()),
                   expert_offset=ps.get_expert_model_parallel_rank() * (lay.num_experts // ep), expert_parallel=ep)

    def global_name(self, name: str, expert_offset: int | None = None) -> str:
        """Local parameter name → global name (layer and expert numbers); ``expert_offset``: that of
        another rank of the expert-parallel group (default this rank's)."""
        name = to_global_name(name, self.layers)
        offset = self.expert_offset if expert_offset is None else expert_offset
        return _LOCAL_EXPERT.sub(lambda m: f".local_experts.{int(m.group(1)) + offset}.", name) \
            if is_expert(name) else name

    @staticmethod
    def tensor_split(name: str) -> tuple[int, int, Any]:
        """(size, rank, group) of the tensor-parallel group that splits parameter ``name``."""
        from megatron.core import parallel_state as ps

        if is_expert(name):
            return (ps.get_expert_tensor_parallel_world_size(), ps.get_expert_tensor_parallel_rank(),
                    ps.get_expert_tensor_parallel_group())
        return (ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank(),
                ps.get_tensor_model_parallel_group())


def padded_vocab(vocab: int, tp: int) -> int:
    return -(-vocab // tp) * tp


def layer_range(num_layers: int, pp: int, stage: int) -> range:
    per = num_layers // pp
    return range(stage * per, (stage + 1) * per)


def to_global_name(name: str, layers: range) -> str:
    match = _LAYER.match(name)
    return f"decoder.layers.{int(match.group(1)) + layers.start}.{match.group(2)}" if match else name


def _is_gated_fc1(name: str, gated: bool) -> bool:
    return gated and name.endswith("mlp.linear_fc1.weight")


def shard(name: str, full: torch.Tensor, param: torch.Tensor, tp: int, rank: int, gated: bool) -> torch.Tensor:
    """This tensor-parallel rank's part of ``full`` for ``param`` (the model's local parameter)."""
    if name in VOCAB and full.shape[0] < param.shape[0] * tp:  # pad the vocabulary to the model's size
        full = torch.cat([full, full.new_zeros(param.shape[0] * tp - full.shape[0], *full.shape[1:])])
    if tp == 1 or not getattr(param, "tensor_model_parallel", False):
        return full
    dim = param.partition_dim  # type: ignore[attr-defined]  # set by megatron's parallel layers
    if _is_gated_fc1(name, gated):
        gate, up = full.chunk(2)
        return torch.cat([gate.chunk(tp, dim)[rank], up.chunk(tp, dim)[rank]])
    return full.chunk(tp, dim)[rank]


def gather(name: str, local: torch.Tensor, param: torch.Tensor, tp: int, group, gated: bool) -> torch.Tensor:
    """The full tensor from each tensor-parallel rank's ``local`` part of parameter ``param`` (the
    parameter itself, or e.g. its gradient); collective over ``group``."""
    if tp == 1 or not getattr(param, "tensor_model_parallel", False):
        return local.detach()
    parts = [torch.empty_like(local) for _ in range(tp)]
    dist.all_gather(parts, local.detach().contiguous(), group=group)
    dim = param.partition_dim  # type: ignore[attr-defined]  # set by megatron's parallel layers
    if _is_gated_fc1(name, gated):
        halves = [p.chunk(2) for p in parts]
        return torch.cat([torch.cat([h[0] for h in halves], dim), torch.cat([h[1] for h in halves], dim)])
    return torch.cat(parts, dim)


def unpad(name: str, full: torch.Tensor, vocab: int) -> torch.Tensor:
    return full[:vocab] if name in VOCAB else full
