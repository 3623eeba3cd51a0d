"""The micro-batch planner (areal_core.data.microbatch) as the engine uses it."""

import random

import pytest

from areal_core.data.microbatch import balance_over_ranks, first_fit_decreasing, plan_micro_batches
from areal_core.errors import ArealError


def long_tail(n, seed):
    rng = random.Random(seed)
    return [min(2000, int(rng.paretovariate(1.2) * 20)) for _ in range(n)]


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 8])
@pytest.mark.parametrize("seed", range(5))
def test_plan_covers_every_sequence_once_within_budget(n_ranks, seed):
    lens = long_tail(50, seed)
    budget = 256
    plan = plan_micro_batches(lens, budget, n_ranks)
    assert len(plan.ranks) == n_ranks
    counts = {len(r) for r in plan.ranks}
    assert counts == {plan.num_micro_batches}, "every rank must run the same number of micro-batches"
    flat = sorted(i for r in plan.ranks for mb in r for i in mb)
    assert flat == list(range(len(lens)))
    for r in range(n_ranks):
        for mb, tokens in zip(plan.ranks[r], plan.tokens(r)):
            assert tokens <= budget or len(mb) == 1, "only a lone over-long sequence may exceed the budget"


def test_plan_is_deterministic():
    lens = long_tail(40, 0)
    assert plan_micro_batches(lens, 300, 4) == plan_micro_batches(list(lens), 300, 4)


def test_ranks_are_balanced_by_tokens():
    lens = long_tail(200, 1)
    loads = plan_micro_batches(lens, 512, 4).rank_tokens()
    assert max(loads) - min(loads) <= max(lens)


def test_first_fit_decreasing_packs_tightly():
    # 30 tokens, budget 10: FFD places 6|5,5|4 (into 6's bin)|3,3,2,2 -> three full bins, the optimum
    bins = first_fit_decreasing(range(8), [6, 5, 5, 4, 3, 3, 2, 2], 10)
    assert bins == [[0, 3], [1, 2], [4, 5, 6, 7]]


def test_fewer_sequences_than_ranks_gives_empty_micro_batches():
    plan = plan_micro_batches([5], 100, 2)
    assert plan.ranks == (((0,),), ((),))


def test_rank_with_fewer_bins_splits_to_match():
    # rank 0 gets the 90-token sequence, rank 1 gets 40+30+20. Budget 50: rank 0 needs 1 bin (an
    # over-long sequence alone), rank 1 needs 2 (40 | 30+20) -> rank 0 pads with an empty one.
    plan = plan_micro_batches([90, 40, 30, 20], 50, 2)
    assert plan.num_micro_batches == 2
    assert plan.ranks[0] == ((0,), ())
    assert sorted(i for mb in plan.ranks[1] for i in mb) == [1, 2, 3]


def test_min_micro_batches_splits_bins():
    plan = plan_micro_batches([10, 10, 10, 10], 100, 1, min_micro_batches=2)
    assert plan.ranks[0] == ((0, 2), (1, 3))


def test_balance_assigns_longest_first():
    # 9 -> rank 0; 5 -> rank 1; 5 -> rank 1 (5 < 9); 1 -> rank 0 (9 < 10): 10 | 10
    assert balance_over_ranks([1, 9, 5, 5], 2) == [[0, 1], [2, 3]]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ArealError, match="max_tokens_per_mb"):
        plan_micro_batches([3], 0)
    with pytest.raises(ArealError, match="at least one token"):
        plan_micro_batches([3, 0], 10)
