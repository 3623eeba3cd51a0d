"""train_step on two FSDP ranks reports what it reports on one rank (same global batch).

Checks the global token-mean loss normaliser and the all-reduce of the loss functions' stats:
each rank only sees its share of the micro-batches (and a rank may report names the other lacks).
"""

import pytest
import torch

import _grpo_ranks
from areal_core.testing.ranks import run_ranks
from areal_core.testing.tiny import make_tiny_model


def test_two_ranks_report_the_same_stats(tmp_path):
    model = str(make_tiny_model(tmp_path / "model"))
    single = _grpo_ranks.run(model)
    run_ranks(_grpo_ranks.rank_main, 2, model, str(tmp_path))
    double = torch.load(tmp_path / "stats.pt", weights_only=False)
    assert single.keys() == double.keys()
    for key in single:
        assert double[key] == pytest.approx(single[key], rel=1e-4, abs=1e-5), key
    # the second minibatch sees π_θ ≠ π_prox: the stats are not trivially 0 or 1
    assert 0 < single["actor/clip_fraction"] < 1 and 0 < single["behav_weight/masked_fraction"] < 1
    # ranks that report different stat names (one whose loss never ran) reduce the union of them:
    # shared (1 + 2 + 11 + 12)/4; only_rank0 (4 + 6)/2 on rank 0's tokens; only_rank1 max 7
    for rank in (0, 1):
        disjoint = torch.load(tmp_path / f"disjoint{rank}.pt", weights_only=False)
        assert disjoint == {"shared": 6.5, "only_rank0": 5.0, "only_rank1": 7.0}, rank
