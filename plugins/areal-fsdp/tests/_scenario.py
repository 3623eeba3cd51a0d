"""A short training run shared by the 1-rank (in-process) and 2-rank (spawned) tests.

Lives outside the test module so spawned ranks can import it by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from areal_core.testing.train_engine import mask_count, nll_loss, random_batch
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine


def batches():
    """Three steps: many sequences; ONE sequence (a second rank gets nothing: dummy passes);
    sequences longer than the micro-batch budget."""
    return [random_batch([7, 20, 4, 33, 12, 2, 9, 15], seed=0), random_batch([25], seed=1),
            random_batch([3, 40, 11], seed=2)]


def run(model_path: str, out_dir: str, overrides: dict) -> dict:
    """Train on :func:`batches`, then forward, save, export and gather the full weights."""
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, **overrides))
    engine.initialize()
    stats = [engine.train_batch(b, nll_loss, mask_count) for b in batches()]
    logprobs = engine.forward(batches()[0])
    engine.save(str(Path(out_dir) / "ckpt"))
    engine.export_hf(str(Path(out_dir) / "hf"))
    weights = {name: t.clone() for name, t in engine.named_full_weights()}
    engine.destroy()
    return {"stats": stats, "logprobs": logprobs, "weights": weights}


def rank_main(rank: int, world: int, port: int, model_path: str, out_dir: str, overrides: dict) -> None:
    """Entry point of one spawned rank: join the group, run, rank 0 writes result.pt."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = run(model_path, out_dir, overrides)
        if rank == 0:
            torch.save(result, Path(out_dir) / "result.pt")
    finally:
        dist.destroy_process_group()
