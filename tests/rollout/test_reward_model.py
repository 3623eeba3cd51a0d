"""``reward_model``: scores of a trained RM, batched across concurrent calls, equal to one-by-one scores."""

from __future__ import annotations

import threading

import pytest

from areal_core.errors import ArealError
from areal_core.registry import build_registry

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A reward model directory as `areal rm` exports it: a 1-label token classifier + tokenizer."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from areal_core.testing.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("rm")
    lm = make_tiny_model(root / "lm", size="0.2m")
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(lm, num_labels=1)
    model.save_pretrained(root / "rm")
    AutoTokenizer.from_pretrained(lm).save_pretrained(root / "rm")
    return root / "rm"


def one_by_one(path, prompt, completion):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from areal_core.data.preference import encode_prompt_completion

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path).eval()
    ids, _ = encode_prompt_completion(tokenizer, prompt, completion)
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, -1, 0])


PAIRS = [("3+4=", "7"), ("9+9+9+9=", "36"), ("1+1=", "a much longer wrong answer")]


def test_concurrent_calls_are_batched_and_score_like_one_by_one(rm_dir):
    reward = build_registry(entry_points=False).create("reward", "reward_model",
                                                       {"path": str(rm_dir), "max_wait_ms": 200})
    forwards = []
    real_score = reward.score
    reward.score = lambda pairs: forwards.append(len(pairs)) or real_score(pairs)
    results: dict[int, float] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, reward(*PAIRS[i], {})))
               for i in range(len(PAIRS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(forwards) == 3 and len(forwards) < 3  # at least two calls shared a forward
    for i, (prompt, completion) in enumerate(PAIRS):  # right padding does not change a score
        assert results[i] == pytest.approx(one_by_one(rm_dir, prompt, completion), abs=1e-5)


def test_scale_and_shift(rm_dir):
    registry = build_registry(entry_points=False)
    plain = registry.create("reward", "reward_model", {"path": str(rm_dir)})
    scaled = registry.create("reward", "reward_model", {"path": str(rm_dir), "scale": -2.0, "shift": 1.0})
    assert scaled("3+4=", "7", {}) == pytest.approx(-2.0 * plain("3+4=", "7", {}) + 1.0, abs=1e-5)


def test_a_directory_without_a_reward_model_is_refused(tmp_path):
    with pytest.raises(ArealError, match="cannot load .* as a reward model"):
        build_registry(entry_points=False).create("reward", "reward_model", {"path": str(tmp_path / "missing")})
