"""``arith``: the verifier. 1.0 when the completion is exactly the sample's total, else 0.0.

    reward("3+5+2=", "10", {"answer": "10"}) == 1.0
    reward("3+5+2=", " 10\n", {"answer": "10"}) == 1.0     # surrounding whitespace is ignored
    reward("3+5+2=", "11", {"answer": "10"}) == 0.0
    reward("3+5+2=", "10 or 11", {"answer": "10"}) == 0.0  # no hedging: the whole answer must match
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from areal_core.plugin import ArealError, ComponentConfig


class ArithRewardConfig(ComponentConfig):
    """Options of the ``arith`` reward."""

    answer_field: str = Field("answer", description="sample field holding the expected total (as text or a number)")


class ArithReward:
    """Exact-match verifier; stateless, safe to call from many threads."""

    def __init__(self, config: ArithRewardConfig):
        self.field = config.answer_field

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        if self.field not in sample:
            raise ArealError(f"arith: the sample has no {self.field!r} field (reward.answer_field); keys: {sorted(sample)}")
        return 1.0 if completion.strip() == str(sample[self.field]).strip() else 0.0
