"""Dataset generation: deterministic, held-out split disjoint, the teacher's noise as documented."""

import json
import random

import pytest

from areal_arith.cli import main
from areal_arith.task import MAX_TERMS, MIN_TERMS, Problem, make_splits, preference_pairs, teacher_answer


def test_problem_text():
    p = Problem((3, 5, 2))
    assert p.prompt == "3+5+2=" and p.answer == 10


def test_same_seed_same_rows_other_seed_other_rows():
    a, b, c = make_splits(seed=0, n_sft=500), make_splits(seed=0, n_sft=500), make_splits(seed=1, n_sft=500)
    assert a == b
    assert a["train"] != c["train"]


def test_valid_problems_are_distinct_and_never_trained_on():
    splits = make_splits(seed=3, n_train=3000, n_valid=200, n_sft=5000)
    valid = [r["prompt"] for r in splits["valid"]]
    assert len(set(valid)) == 200
    trained = {r["prompt"] for r in splits["train"]} | {r["prompt"] for r in splits["sft"]}
    assert not trained & set(valid)


def test_rows_are_well_formed():
    splits = make_splits(seed=0, n_train=300, n_valid=50, n_sft=300)
    for name, rows in splits.items():
        assert len({r["id"] for r in rows}) == len(rows), name
        for r in rows:
            terms = [int(t) for t in r["prompt"].rstrip("=").split("+")]
            assert MIN_TERMS <= len(terms) <= MAX_TERMS and all(0 <= t <= 9 for t in terms)
            if name != "sft":
                assert r["answer"] == str(sum(terms))


def teacher_errors(teacher_error, accuracy):
    rows = make_splits(seed=0, n_train=1, n_valid=1, n_sft=20000, teacher_accuracy=accuracy, teacher_error=teacher_error)["sft"]
    return [int(r["completion"]) - sum(int(t) for t in r["prompt"].rstrip("=").split("+")) for r in rows]


def test_over_teacher_is_right_at_its_accuracy_and_otherwise_one_too_many():
    errors = teacher_errors("over", 0.2)
    # 20000 Bernoulli(0.2) draws: std ≈ 0.0028
    assert 0.19 < errors.count(0) / len(errors) < 0.21
    assert set(errors) == {0, 1}


def test_either_teacher_is_off_by_one_both_ways():
    errors = teacher_errors("either", 0.3)
    # 20000 Bernoulli(0.3) draws, plus the few totals of 0 where "-1" is floored back to 0: std ≈ 0.0032
    assert 0.29 < errors.count(0) / len(errors) < 0.32
    assert set(errors) == {-1, 0, 1}
    assert abs(errors.count(1) - errors.count(-1)) / len(errors) < 0.03


def test_teacher_never_goes_below_zero():
    rng = random.Random(0)
    assert all(teacher_answer(Problem((0, 0)), 0.0, rng, "either") >= 0 for _ in range(100))


def test_bad_teacher_settings_are_rejected():
    with pytest.raises(ValueError, match="teacher_accuracy must be in"):
        make_splits(teacher_accuracy=1.5)
    with pytest.raises(ValueError, match="teacher_error must be one of over, either, got 'under'"):
        make_splits(teacher_error="under")


def test_prepare_writes_model_and_splits(tmp_path):
    assert main(["prepare", str(tmp_path), "--size", "0.2m", "--n-train", "20", "--n-valid", "5", "--n-sft", "20"]) == 0
    assert (tmp_path / "model" / "config.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"id", "prompt", "answer"} <= set(rows[0])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    # digits are single tokens, so every total is spelled digit by digit
    assert tok.tokenize("12") == ["1", "2"]


def test_preference_pairs_prefer_the_right_total():

    rows = make_splits(seed=0, n_train=300, n_valid=10, n_sft=10)["train"]
    over = preference_pairs(rows, rejected="over")
    assert all(int(p["rejected"]) == int(p["chosen"]) + 1 and p["chosen"] == r["answer"] for p, r in zip(over, rows))
    either = preference_pairs(rows, rejected="either")
    offsets = {int(p["rejected"]) - int(p["chosen"]) for p in either}
    assert offsets == {-1, 1} and all(int(p["rejected"]) >= 0 for p in either)
    assert either == preference_pairs(rows, rejected="either")  # deterministic
    with pytest.raises(ValueError, match="rejected must be one of"):
        preference_pairs(rows, rejected="bogus")


def test_pairs_command_writes_both_splits(tmp_path):
    splits = make_splits(seed=0, n_train=20, n_valid=5, n_sft=5)
    for name in ("train", "valid"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits[name]))
    assert main(["pairs", str(tmp_path), "--rejected", "over"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "pairs_over_valid.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in splits["valid"]]


def test_model_pairs_reject_the_models_own_mistakes():
    from areal_arith.task import model_pairs

    rows = [{"id": "a", "prompt": "1+2=", "answer": "3"}, {"id": "b", "prompt": "4+4=", "answer": "8"}]
    assert model_pairs(rows, [" 3", "9"]) == [{"id": "pair-b", "prompt": "4+4=", "chosen": "8", "rejected": "9"}]
    with pytest.raises(ValueError, match="rejected must be one of"):
        preference_pairs(rows, rejected="model")  # needs a model: areal-arith pairs --model
