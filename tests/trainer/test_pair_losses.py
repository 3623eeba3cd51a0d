"""Pair losses, per-sequence sums and preference/conversation encoding, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from areal_core.data.preference import (
    PreferenceFields,
    encode_conversation,
    encode_pair,
)
from areal_core.errors import ArealError

torch = pytest.importorskip("torch")

from areal_core.data.batch import SequenceBatch
from areal_core.trainer.pair_losses import (
    BradleyTerryConfig,
    BradleyTerryLoss,
    DPOLoss,
    IPOConfig,
    IPOLoss,
)
from areal_core.trainer.pair_losses import DPOConfig as DPOLossConfig
from areal_core.trainer.pairs import pair_metrics, sequence_values


def f64(*v):
    return torch.tensor(v, dtype=torch.float64)


def log_sigmoid(z):
    return -math.log(1 + math.exp(-z))


def test_dpo_sigmoid_by_hand():
    loss = DPOLoss(DPOLossConfig(name="dpo", beta=0.1))
    got = loss(f64(1.0, -0.5), f64(0.2, 0.3))
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx([-log_sigmoid(0.1 * 0.8), -log_sigmoid(0.1 * -0.8)], rel=1e-12)


def test_dpo_label_smoothing_by_hand():
    loss = DPOLoss(DPOLossConfig(name="dpo", beta=0.5, label_smoothing=0.1))
    z = 0.5 * (2.0 - 1.0)
    assert float(loss(f64(2.0), f64(1.0))) == pytest.approx(-0.9 * log_sigmoid(z) - 0.1 * log_sigmoid(-z), rel=1e-12)


def test_dpo_nll_term_by_hand():
    loss = DPOLoss(DPOLossConfig(name="dpo", beta=0.1, nll_coef=0.5))
    x_c, x_r = f64(-2.0), f64(-3.0)
    assert float(loss(x_c, x_r)) == pytest.approx(-log_sigmoid(0.1 * 1.0) + 0.5 * 2.0, rel=1e-12)


def test_ipo_by_hand():
    loss = IPOLoss(IPOConfig(name="ipo", beta=0.25))  # target margin 1/(2β) = 2
    assert loss(f64(3.0, 0.0), f64(0.5, 1.0)).tolist() == pytest.approx([(2.5 - 2) ** 2, (-1.0 - 2) ** 2])


def test_bradley_terry_by_hand_and_metrics():
    loss = BradleyTerryLoss(BradleyTerryConfig(name="bradley_terry"))
    x_c, x_r = f64(1.5, -1.0, 0.0, 0.5), f64(0.5, 1.0, 0.25, 0.5)
    assert loss(x_c, x_r).tolist() == pytest.approx([-log_sigmoid(1.0), -log_sigmoid(-2.0), -log_sigmoid(-0.25),
                                                     -log_sigmoid(0.0)])
    m = pair_metrics(loss, x_c, x_r)
    assert m["accuracy"] == pytest.approx((1 + 0.5) / 4)  # one win, one tie
    assert m["margin"] == pytest.approx((1.0 - 2.0 - 0.25 + 0) / 4)
    dpo = pair_metrics(DPOLoss(DPOLossConfig(name="dpo", beta=0.1)), x_c, x_r)
    assert dpo["reward_chosen"] == pytest.approx(0.1 * 1.0 / 4)  # implicit reward β·log-ratio


def packed(lengths, masks, values):
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.long)
    return SequenceBatch(cu, {"input_ids": torch.zeros(sum(lengths), dtype=torch.long),
                              "loss_mask": torch.tensor([m for mask in masks for m in mask], dtype=torch.float32)}), \
        torch.tensor(values, dtype=torch.float32)


def test_sequence_sums_cover_only_the_answer_of_each_packed_sequence():
    batch, out = packed([3, 5, 2], [[0, 1, 1], [0, 0, 0, 1, 1], [0, 1]],
                        [-9, -1, -2, -9, -9, -9, -3, -4, -9, -5])
    assert sequence_values(out, batch, "logprob").tolist() == [-3.0, -7.0, -5.0]  # prompts (-9) never count
    assert sequence_values(out, batch, "score").tolist() == [-2.0, -4.0, -5.0]  # the last token of each


def test_sequence_sums_are_float64():
    # 2^24 + 1 + 1 is 2^24 in float32 (each +1 rounds away) but exact in float64
    batch, out = packed([3], [[1, 1, 1]], [2.0 ** 24, 1.0, 1.0])
    assert out.sum().item() == 2.0 ** 24
    got = sequence_values(out, batch, "logprob")
    assert got.dtype == torch.float64 and got.item() == 2.0 ** 24 + 2


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from areal_core.testing.tiny import make_tokenizer

    path = tmp_path_factory.mktemp("tok")
    make_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def answer_text(tokenizer, encoded):
    ids, mask = encoded
    return tokenizer.decode([t for t, m in zip(ids, mask) if m])


@pytest.mark.parametrize("row", [
    {"prompt": "2+3=", "chosen": "5", "rejected": "6"},
    {"prompt": [{"role": "user", "content": "2+3="}], "chosen": "5", "rejected": "6"},
    {"prompt": "2+3=", "chosen": {"role": "assistant", "content": "5"}, "rejected": {"role": "assistant", "content": "6"}},
    {"chosen": [{"role": "user", "content": "2+3="}, {"role": "assistant", "content": "5"}],
     "rejected": [{"role": "user", "content": "2+3="}, {"role": "assistant", "content": "6"}]},
    {"prompt": [{"role": "user", "content": "2+3="}],
     "chosen": [{"role": "user", "content": "2+3="}, {"role": "assistant", "content": "5"}],
     "rejected": [{"role": "assistant", "content": "6"}]},
], ids=["text", "prompt-messages", "answer-message", "conversations", "mixed"])
def test_every_shape_encodes_the_same_pair(tokenizer, row):
    chosen, rejected = encode_pair(row, tokenizer, PreferenceFields(), "r")
    reference = encode_pair({"prompt": "2+3=", "chosen": "5", "rejected": "6"}, tokenizer, PreferenceFields(), "r")
    assert (chosen, rejected) == reference
    assert answer_text(tokenizer, chosen) == "5<|im_end|>" and answer_text(tokenizer, rejected) == "6<|im_end|>"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "a"}, r"train row 's1' \(index 4\): no field 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, r"field 'prompt' must be text or a list of messages, got int"),
    ({"chosen": "a", "rejected": "b"}, r"field 'chosen' is text but the row has no 'prompt' field"),
    ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, r"field 'chosen': message 0 must be a mapping with 'role'"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     r"field 'chosen': the last message must be the assistant's answer"),
    ({"prompt": "q", "chosen": 1.5, "rejected": "b"}, r"field 'chosen' must be text, a message or a list of messages"),
])
def test_bad_rows_name_the_row_and_field(tokenizer, row, message):
    with pytest.raises(ArealError, match=message):
        encode_pair({**row, "sample_id": "s1"}, tokenizer, PreferenceFields(), "train row 's1' (index 4)")


def test_conversation_masks_every_assistant_turn(tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "and 2+2="},
                {"role": "assistant", "content": "4"}]
    ids, mask = encode_conversation(tokenizer, messages, "r")
    assert answer_text(tokenizer, (ids, mask)) == "2<|im_end|>4<|im_end|>"
    # the unmasked tokens are the chat template's rendering, in order
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False).rstrip("\n")
    spans = [m for i, m in enumerate(mask) if i == 0 or m != mask[i - 1]]
    assert spans == [0, 1, 0, 1]  # two separate target spans
    with pytest.raises(ArealError, match="no assistant message"):
        encode_conversation(tokenizer, [{"role": "user", "content": "hi"}], "r")
