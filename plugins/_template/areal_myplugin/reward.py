"""The ``myplugin`` reward: does the completion state the expected answer?

    reward = 1.0  if sample[answer_field] occurs in the completion as a whole word
             0.0  otherwise (also when the sample has no answer)
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from areal_core.plugin import ComponentConfig


class MypluginRewardConfig(ComponentConfig):
    """Options of the ``myplugin`` reward (the ``reward:`` section of a run config)."""

    answer_field: str = Field("answer", description="sample field holding the expected answer")
    case_sensitive: bool = Field(False, description="compare letters case-sensitively")


class MypluginReward:
    """``factory(config) -> Reward``: called as ``reward(prompt, completion, sample) -> float``."""

    def __init__(self, config: MypluginRewardConfig):
        self.config = config

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        answer = str(sample.get(self.config.answer_field, "")).strip()
        if not answer:
            return 0.0
        flags = 0 if self.config.case_sensitive else re.IGNORECASE
        return 1.0 if re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", completion, flags) else 0.0
