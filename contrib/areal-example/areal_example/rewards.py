"""``regex_match``: a reward that checks the completion against a regular expression.

    reward = match_reward  if re.search(pattern, completion)
             miss_reward   otherwise

``{{field}}`` in the pattern is replaced by the sample's ``field``, escaped, so one pattern
checks each sample's own answer: ``pattern: "<answer>\\s*{{answer}}\\s*</answer>"``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from areal_core.plugin import ArealError, ComponentConfig

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class RegexMatchConfig(ComponentConfig):
    """Options of the ``regex_match`` reward."""

    pattern: str = Field(description="Python regular expression searched for in the completion; {{field}} inserts sample[field]")
    match_reward: float = Field(1.0, description="reward when the pattern is found")
    miss_reward: float = Field(0.0, description="reward when it is not")
    ignore_case: bool = Field(False, description="match letters case-insensitively")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(PLACEHOLDER.sub("x", pattern))
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class RegexMatchReward:
    """``reward(prompt, completion, sample) -> float``; stateless, so safe to call from many threads."""

    def __init__(self, config: RegexMatchConfig):
        self.config = config
        self.flags = re.IGNORECASE if config.ignore_case else 0
        self.fields = PLACEHOLDER.findall(config.pattern)
        self.fixed = None if self.fields else re.compile(config.pattern, self.flags)

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        regex = self.fixed or re.compile(PLACEHOLDER.sub(lambda m: self._field(sample, m.group(1)), self.config.pattern), self.flags)
        return self.config.match_reward if regex.search(completion) else self.config.miss_reward

    @staticmethod
    def _field(sample: dict[str, Any], name: str) -> str:
        if name not in sample:
            raise ArealError(f"regex_match: the pattern uses {{{{{name}}}}} but the sample has no {name!r} (keys: {sorted(sample)})")
        return re.escape(str(sample[name]))
