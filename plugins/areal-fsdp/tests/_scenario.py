"""A short training run shared by the 1-rank (in-process) and 2-rank (spawned) tests.

Lives outside the test module so spawned ranks can import it by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

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


def rank_main(rank: int, model_path: str, out_dir: str, overrides: dict) -> None:
    """One rank under ``areal_core.testing.ranks.run_ranks``: run; rank 0 writes result.pt."""
    result = run(model_path, out_dir, overrides)
    if rank == 0:
        torch.save(result, Path(out_dir) / "result.pt")
