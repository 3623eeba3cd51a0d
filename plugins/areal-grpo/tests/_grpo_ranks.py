"""One GRPO step on the fsdp engine, shared by the 1-rank (in-process) and 2-rank (spawned) test.

Lives outside the test module so spawned ranks can import it by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from areal_core.data.batch import SequenceBatch
from areal_core.testing.algorithm import make_trajectories
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine
from areal_grpo.ppo import PPOAlgorithm
from areal_grpo.presets import GRPOConfig


def run(model_path: str) -> dict[str, float]:
    """Stats of one train_step (2 minibatches, ε = 0.05, w ≤ 1.2 kept) on an off-policy batch."""
    engine = FSDPEngine(FSDPEngineConfig(path=model_path, optimizer={"lr": 1e-2}, max_tokens_per_mb=16))
    engine.initialize()
    algo = PPOAlgorithm(GRPOConfig(name="grpo", n_minibatches=2, eps_clip=0.05, behav_weight_upper=1.2))
    batch = SequenceBatch.from_trajectories(make_trajectories())
    noise = 0.3 * torch.randn(batch.num_tokens, generator=torch.Generator().manual_seed(0))
    batch.tokens["logprobs"] = torch.where(batch["loss_mask"] > 0, engine.forward(batch) + noise, 0.0)
    stats = algo.train_step(batch, engine)
    engine.destroy()
    return stats


def rank_main(rank: int, model_path: str, out_dir: str) -> None:
    """One rank under ``areal_core.testing.ranks.run_ranks``: rank 0 writes stats.pt; each rank disjoint{rank}.pt."""
    stats = run(model_path)
    if rank == 0:
        torch.save(stats, Path(out_dir) / "stats.pt")
    torch.save(disjoint_stats(rank), Path(out_dir) / f"disjoint{rank}.pt")


def disjoint_stats(rank: int) -> dict[str, float]:
    """Rank 0 reports ``shared`` and ``only_rank0``, rank 1 ``shared`` and a max ``only_rank1``: as when one
    rank's micro-batches were all padding and its loss functions never ran."""
    from areal_grpo.stats import StatSums

    sums = StatSums()
    mask = torch.ones(2, dtype=torch.bool)
    sums.add_mean("shared", torch.tensor([1.0, 2.0]) + 10 * rank, mask)
    if rank == 0:
        sums.add_mean("only_rank0", torch.tensor([4.0, 6.0]), mask)
    else:
        sums.add_max("only_rank1", torch.tensor([3.0, 7.0]), mask)
    return sums.result()
