"""``gsm8k`` and ``math_answer``: 1 when a completion's final answer equals the sample's reference.

    reference = sample[answer_field], the text after its last "####" if it has one
    found     = extract_answer(completion, formats)          first format that finds an answer
    reward    = no_answer_reward    if found is None
                correct_reward      if answers_match(found, reference)
                incorrect_reward    otherwise

Extraction, normalisation and comparison are in :mod:`areal_math.answers`. The two names differ
only in the order the formats are tried: ``gsm8k`` looks for GSM8K's own ``#### 42`` first,
``math_answer`` for ``\\boxed{..}`` first (the MATH convention). ``require_format`` drops the
``last_number`` fallback, so only an answer the completion marks (``####``, ``\\boxed``, "the answer
is") can score.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field, field_validator, model_validator

from areal_core.plugin import ArealError, ComponentConfig
from areal_math.answers import MARKED_FORMATS, AnswerFormat, answers_match, extract_answer, reference_answer


class MathAnswerConfig(ComponentConfig):
    """Options of the ``math_answer`` reward (and, with other defaults, ``gsm8k``)."""

    answer_field: str = Field("answer", description="sample field holding the reference: a bare answer, or a "
                                                    "solution whose text after the last '####' is the answer")
    formats: list[AnswerFormat] = Field(
        default_factory=lambda: list[AnswerFormat](["boxed", "hashes", "answer_is", "last_number"]),
        description="where the completion's answer is looked for, in this order; the first format that finds "
                    "one wins: boxed (\\boxed{..}), hashes (#### ..), answer_is ('the answer is ..'), "
                    "last_number (the last number in the text)")
    require_format: bool = Field(False, description="only a marked answer counts (hashes, boxed, answer_is): the "
                                                    "last_number fallback is not used")
    correct_reward: float = Field(1.0, description="reward when the answer equals the reference")
    incorrect_reward: float = Field(0.0, description="reward when an answer is found but differs")
    no_answer_reward: float = Field(0.0, description="reward when no answer is found (e.g. a truncated completion)")

    @field_validator("formats")
    @classmethod
    def _formats(cls, formats: list[str]) -> list[str]:
        if not formats:
            raise ValueError("give at least one answer format")
        repeated = sorted({f for f in formats if formats.count(f) > 1})
        if repeated:
            raise ValueError(f"formats listed more than once: {repeated}")
        return formats

    @model_validator(mode="after")
    def _something_to_look_for(self):
        if self.require_format and not any(f in MARKED_FORMATS for f in self.formats):
            raise ValueError(f"require_format=true leaves no format to look for: formats {self.formats} has none "
                             f"of {list(MARKED_FORMATS)}")
        return self


def _formats_default(order: list[str]) -> Any:
    """MathAnswerConfig's ``formats`` field with another default order (typed Any, like ``pydantic.Field``)."""
    info = copy.copy(MathAnswerConfig.model_fields["formats"])
    info.default_factory = lambda: list(order)
    return info


class GSM8KConfig(MathAnswerConfig):
    """Options of the ``gsm8k`` reward: ``math_answer`` trying GSM8K's ``####`` format first."""

    formats: list[AnswerFormat] = _formats_default(["hashes", "boxed", "answer_is", "last_number"])


class MathAnswerReward:
    """``reward(prompt, completion, sample) -> float``. Stateless: safe from many threads at once."""

    def __init__(self, config: MathAnswerConfig):
        self.config = config
        self.formats = tuple(f for f in config.formats if not (config.require_format and f not in MARKED_FORMATS))

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        c = self.config
        if c.answer_field not in sample:
            raise ArealError(f"reward {c.name!r}: the sample has no {c.answer_field!r} field (reward.answer_field); "
                             f"its fields: {sorted(sample)}")
        found = extract_answer(completion, self.formats)
        if found is None:
            return c.no_answer_reward
        return c.correct_reward if answers_match(found.text, reference_answer(sample[c.answer_field])) else c.incorrect_reward
