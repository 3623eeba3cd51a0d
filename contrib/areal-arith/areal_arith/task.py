"""The task: add 2 to 4 single digits. Problems, a noisy teacher, and the quickstart's datasets.

A problem is a tuple of digits; its prompt is the sum written out and its answer the total::

    (3, 5, 2)  ->  prompt "3+5+2="  answer "10"

Three splits, all generated offline from one seed:

* ``valid``: ``n_valid`` distinct problems, held out. No problem of ``valid`` appears in the other
  two splits (some two-digit problems are therefore never trained on: there are only 100).
* ``train``: RL prompts (``prompt``, ``answer``), drawn from the remaining problems.
* ``sft``: demonstrations (``prompt``, ``completion``) written by a *noisy teacher*: the right
  total with probability ``teacher_accuracy``, otherwise the total off by one: ``teacher_error``
  ``"over"`` (default) always one too many, a systematic bug; ``"either"`` ±1 with equal odds
  (never below 0). Fine-tuning on them teaches the answer format and roughly the right number;
  the exact total is what RL against the verifier (:mod:`areal_arith.reward`) has to teach.

Everything is a pure function of the arguments: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

MIN_TERMS, MAX_TERMS = 2, 4


@dataclass(frozen=True)
class Problem:
    terms: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "+".join(str(t) for t in self.terms) + "="

    @property
    def answer(self) -> int:
        return sum(self.terms)


def random_problem(rng: random.Random) -> Problem:
    """2 to 4 terms (equally likely), each a digit 0..9."""
    n = rng.randint(MIN_TERMS, MAX_TERMS)
    return Problem(tuple(rng.randint(0, 9) for _ in range(n)))


TEACHER_ERRORS = ("over", "either")


def teacher_answer(problem: Problem, accuracy: float, rng: random.Random, error: str = "over") -> int:
    """The noisy teacher: right with probability ``accuracy``, else off by one: +1 (``over``) or
    ±1 with equal odds floored at 0 (``either``)."""
    if rng.random() < accuracy:
        return problem.answer
    if error == "over":
        return problem.answer + 1
    return max(0, problem.answer + rng.choice((-1, 1)))


def make_splits(seed: int = 0, n_train: int = 4000, n_valid: int = 200, n_sft: int = 20000,
                teacher_accuracy: float = 0.2, teacher_error: str = "over") -> dict[str, list[dict]]:
    """The three splits as lists of rows (see the module docstring). Rows carry a stable ``id``."""
    if not 0.0 <= teacher_accuracy <= 1.0:
        raise ValueError(f"teacher_accuracy must be in [0, 1], got {teacher_accuracy}")
    if teacher_error not in TEACHER_ERRORS:
        raise ValueError(f"teacher_error must be one of {', '.join(TEACHER_ERRORS)}, got {teacher_error!r}")
    rng_valid, rng_train, rng_sft, rng_teacher = (random.Random(f"{seed}/{name}") for name in
                                                  ("valid", "train", "sft", "teacher"))
    held_out: list[Problem] = []
    seen: set[Problem] = set()
    while len(held_out) < n_valid:
        p = random_problem(rng_valid)
        if p not in seen:
            seen.add(p)
            held_out.append(p)

    def draw(rng: random.Random, n: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = random_problem(rng)
            if p not in seen:
                out.append(p)
        return out

    valid = [{"id": f"valid-{i}", "prompt": p.prompt, "answer": str(p.answer)} for i, p in enumerate(held_out)]
    train = [{"id": f"train-{i}", "prompt": p.prompt, "answer": str(p.answer)}
             for i, p in enumerate(draw(rng_train, n_train))]
    sft = [{"id": f"sft-{i}", "prompt": p.prompt, "completion": str(teacher_answer(p, teacher_accuracy, rng_teacher, teacher_error))}
           for i, p in enumerate(draw(rng_sft, n_sft))]
    return {"train": train, "valid": valid, "sft": sft}


def tokenizer_corpus(seed: int = 0, n: int = 3000) -> list[str]:
    """Lines of problems and totals: what the quickstart's tiny tokenizer is trained on."""
    rng = random.Random(f"{seed}/corpus")
    return [f"{p.prompt}{p.answer}" for p in (random_problem(rng) for _ in range(n))]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


REJECTED = ("over", "either", "far", "model")


def preference_pairs(rows: list[dict], seed: int = 0, rejected: str = "over") -> list[dict]:
    """Preference rows of problems ``rows`` (``prompt``, ``answer``): chosen = the right total,
    rejected = a wrong total: ``over`` one too many (the noisy teacher's bias), ``either`` ±1 with
    equal odds (never below 0), ``far`` uniform over the totals 0..36 at least 3 away. (``model``,
    a model's own wrong answers, is :func:`model_pairs`.)"""
    if rejected not in REJECTED or rejected == "model":
        raise ValueError(f"rejected must be one of {', '.join(REJECTED)}, got {rejected!r}")
    rng = random.Random(f"{seed}/pairs/{rejected}")
    out = []
    for row in rows:
        total = int(row["answer"])
        if rejected == "far":
            wrong = rng.choice([t for t in range(9 * MAX_TERMS + 1) if abs(t - total) >= 3])
        else:
            wrong = total + 1 if rejected == "over" or total == 0 else total + rng.choice((-1, 1))
        out.append({"id": f"pair-{row['id']}", "prompt": row["prompt"], "chosen": str(total), "rejected": str(wrong)})
    return out


def model_pairs(rows: list[dict], answers: list[str]) -> list[dict]:
    """On-policy preference rows: for each problem a model answered wrongly (``answers[i]``, its
    greedy completion), chosen = the right total, rejected = the model's answer. Right answers
    give no pair."""
    return [{"id": f"pair-{row['id']}", "prompt": row["prompt"], "chosen": str(row["answer"]), "rejected": answer.strip()}
            for row, answer in zip(rows, answers) if answer.strip() != str(row["answer"]).strip()]
