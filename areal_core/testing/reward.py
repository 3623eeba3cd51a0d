"""Contract suite for rewards: ``reward(prompt, completion, sample) -> float`` (sync or async).

Subclass :class:`RewardContract`, name the component and give ``cases``: known completions with
the score each must get (at least one; include a rewarded and an unrewarded one)::

    class TestRegexReward(RewardContract):
        plugin = areal_example.plugin
        component_name = "regex_match"
        component_config = {"pattern": r"\\b{answer}\\b"}
        cases = [RewardCase("2+2?", "it is 4", {"answer": "4"}, 1.0),
                 RewardCase("2+2?", "it is 5", {"answer": "4"}, 0.0)]

Checked: scores match the cases; every score is a finite real number; the same input gives the
same score; concurrent calls (threads for a sync reward, one event loop for an async one) agree
with sequential ones, since the rollout runs rewards concurrently; an empty, a very long and a
non-ASCII completion are scored without raising.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from areal_core.api.protocols import Reward
from areal_core.testing.contract import ComponentContract, run_async


@dataclass(frozen=True)
class RewardCase:
    """One scored example: ``reward(prompt, completion, sample)`` must be ``expected`` (± ``abs_tol``)."""

    prompt: str
    completion: str
    sample: dict[str, Any] = field(default_factory=dict)
    expected: float = 1.0
    abs_tol: float = 1e-6


def score(reward: Reward, prompt: str, completion: str, sample: dict[str, Any]):
    """Call a sync or async reward from synchronous code; returns what it returned."""
    return run_async(reward(prompt, completion, sample))


def is_async_reward(reward: Reward) -> bool:
    return inspect.iscoroutinefunction(reward) or inspect.iscoroutinefunction(getattr(reward, "__call__", None))  # noqa: B004 - inspects the method


class RewardContract(ComponentContract):
    kind = "reward"
    protocol = Reward
    cases: ClassVar[list[RewardCase]] = []

    def test_cases_are_given(self):
        assert self.cases, f"{type(self).__name__}: set `cases` to at least one RewardCase with its expected score"

    def test_scores_match_cases(self, component):
        for case in self.cases:
            got = score(component, case.prompt, case.completion, case.sample)
            assert got == pytest.approx(case.expected, abs=case.abs_tol), f"{case} scored {got!r}"

    def test_scores_are_finite_numbers(self, component):
        for case in self.cases:
            got = score(component, case.prompt, case.completion, case.sample)
            assert isinstance(got, numbers.Real), f"{case} scored {got!r} ({type(got).__name__}), not a real number"
            assert math.isfinite(float(got)), f"{case} scored {got!r}"

    def test_same_input_same_score(self, component):
        for case in self.cases:
            first = score(component, case.prompt, case.completion, case.sample)
            assert score(component, case.prompt, case.completion, case.sample) == first

    def test_concurrent_calls_agree_with_sequential(self, component):
        calls = [c for c in self.cases for _ in range(4)]
        sequential = [score(component, c.prompt, c.completion, c.sample) for c in calls]
        if is_async_reward(component):
            async def all_at_once():
                return await asyncio.gather(*(component(c.prompt, c.completion, c.sample) for c in calls))

            concurrent = run_async(all_at_once())
        else:
            with ThreadPoolExecutor(max_workers=8) as pool:
                concurrent = list(pool.map(lambda c: component(c.prompt, c.completion, c.sample), calls))
        assert list(concurrent) == sequential

    @pytest.mark.parametrize("completion", ["", "x" * 20000, "答案是 ４２ — ½ 🙂\n\t<|im_end|>"], ids=["empty", "long", "unicode"])
    def test_odd_completions_score_without_raising(self, component, completion):
        case = self.cases[0] if self.cases else RewardCase("", "")
        got = score(component, case.prompt, completion, case.sample)
        assert isinstance(got, numbers.Real) and math.isfinite(float(got)), f"completion {completion[:40]!r} scored {got!r}"
