"""Recovery checkpoints with megatron's ``dist_checkpointing``, and the HF directory writer.

A checkpoint directory holds ``dist/`` (model weights and AdamW moments as sharded tensors under
global keys: loadable at any tensor/pipeline/data-parallel layout the model admits),
``engine_state.pt`` (LR schedule, AdamW step count, the layout it was saved at) and
``rng_rank{r}.pt``. It is written to ``<path>.tmp`` and renamed into place when complete.

AdamW moments are saved as sharded tensors shaped like their parameters: each moment reuses its
parameter's ``ShardedTensor`` or ``ShardedTensorFactory`` (global shape, offsets, replica id, how
a fused tensor is split) under the key
``optimizer.<moment>.<parameter key>``, which is what lets them reshard with the weights.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from areal_core.plugin import ArealError
from areal_fsdp import checkpoint as files

if TYPE_CHECKING:
    from areal_megatron.engine import MegatronEngine

DIST_SUBDIR = "dist"
ENGINE_STATE_FILE = "engine_state.pt"
MOMENTS = ("exp_avg", "exp_avg_sq")


def materialise_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's per-parameter state (step 0, zero moments) up front, so a checkpoint can be
    loaded into it before the first step (AdamW continues from it exactly as from its own)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            optimizer.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                  "exp_avg_sq": torch.zeros_like(p)}


def _sharded_state(engine: MegatronEngine) -> dict[str, Any]:
    """``{"model": sharded model state, "optimizer": sharded AdamW moments}`` of this rank."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    model_sd = engine.model.sharded_state_dict()
    params = {id(p): p for p in engine.model.parameters()}
    optim_sd = {}
    for key, sh in model_sd.items():
        # a factory: a parameter saved as several tensors (the gated fc1 as gate and up halves)
        if isinstance(sh, ShardedTensor | ShardedTensorFactory) and id(sh.data) in params:
            state = engine.optimizer.state[params[id(sh.data)]]
            for moment in MOMENTS:  # sh.key is global (one key for a parameter of every layer, by offset)
                optim_sd[f"{moment}.{key}"] = replace(sh, key=f"optimizer.{moment}.{sh.key}", data=state[moment])
    return {"model": model_sd, "optimizer": optim_sd}


def save(engine: MegatronEngine, path: str) -> None:
    from megatron.core import dist_checkpointing

    rank = engine.dist.rank
    if rank == 0:
        files.prepare_temp_dir(path)
    dist.barrier()
    tmp = files.temp_dir_for(path)
    (tmp / DIST_SUBDIR).mkdir(exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(_sharded_state(engine), str(tmp / DIST_SUBDIR))
    torch.save(files.rng_state(engine.dist.accelerator), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        steps = {float(s["step"]) for s in engine.optimizer.state.values()}
        torch.save({"scheduler": engine.scheduler.state_dict(), "adam_step": max(steps, default=0.0),
                    "layout": {"tensor_parallel": engine.config.tensor_parallel,
                               "pipeline_parallel": engine.config.pipeline_parallel,
                               "expert_parallel": engine.config.expert_parallel,
                               "world_size": engine.dist.world_size}}, tmp / ENGINE_STATE_FILE)
    dist.barrier()
    if rank == 0:
        files.publish(path)
    dist.barrier()


def load(engine: MegatronEngine, path: str) -> None:
    from megatron.core import dist_checkpointing

    root = Path(path)
    if not (root / ENGINE_STATE_FILE).is_file():
        raise ArealError(f"train engine {engine.config.name!r}: {path!r} is not a checkpoint written by save() "
                         f"(no {ENGINE_STATE_FILE})")
    sharded = _sharded_state(engine)
    loaded = dist_checkpointing.load(sharded, str(root / DIST_SUBDIR))
    engine.model.load_state_dict(loaded["model"], strict=False)
    meta = torch.load(root / ENGINE_STATE_FILE, weights_only=False)
    with torch.no_grad():
        for name, sh in sharded["optimizer"].items():
            source = loaded["optimizer"][name]
            if source.data_ptr() != sh.data.data_ptr():  # the torch_dist backend loads in place
                sh.data.copy_(source)
    for state in engine.optimizer.state.values():
        state["step"] = torch.tensor(float(meta["adam_step"]))
    engine.scheduler.load_state_dict(meta["scheduler"])
    rng_file = root / f"rng_rank{engine.dist.rank}.pt"
    if rng_file.is_file():
        files.set_rng_state(engine.dist.accelerator, torch.load(rng_file, weights_only=False))


def write_hf_dir(weights: dict[str, torch.Tensor], hf_config, out: Path, source_dir: str) -> None:
    """safetensors of ``weights`` (HF names), the config, and the tokenizer and generation config
    of ``source_dir``."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    hf_config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    try:
        AutoTokenizer.from_pretrained(source_dir).save_pretrained(out)
    except (OSError, ValueError):
        pass  # a model directory without a tokenizer exports weights only
    gen = Path(source_dir, "generation_config.json")
    if gen.is_file():
        shutil.copy(gen, out / "generation_config.json")
