"""``areal sft``: completion-only packed NLL through the fsdp engine, data order, export."""

from __future__ import annotations

import json

import pytest

from areal_core.config.loader import load_config
from areal_core.config.schema import SFTConfig
from areal_core.errors import ArealError
from areal_core.trainer.offline import OfflineTrainer
from areal_core.trainer.sft import encode_example, nll_loss, pack, run_sft

pytest.importorskip("areal_fsdp")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from areal_core.testing.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny", size="0.2m")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def write_rows(path, n, start=0):
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"{i % 7}+{i % 5}=",
                                        "completion": str(i % 7 + i % 5)}) + "\n" for i in range(start, start + n)))
    return path


def sft_config(tmp_path, tiny, **overrides):
    data = write_rows(tmp_path / "sft.jsonl", 40)
    valid = write_rows(tmp_path / "valid.jsonl", 8, start=100)
    args = [f"fileroot={tmp_path / 'runs'}", f"model_path={tiny}", f"train_dataset.path={data}",
            f"valid_dataset.path={valid}", "actor.name=fsdp", "actor.optimizer.lr=3e-3", "trainer.total_steps=12",
            "trainer.batch_size=16", "trainer.eval_every=6", *[f"{k}={v}" for k, v in overrides.items()]]
    return load_config(SFTConfig, overrides=args, env_prefix=None)


def test_encode_masks_the_prompt_and_ends_with_eos(tokenizer):
    cfg = SFTConfig(model_path="m", actor={"name": "fsdp"}, train_dataset={"path": "x"})
    ids, mask = encode_example({"prompt": "3+4=", "completion": "7"}, tokenizer, cfg)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "3+4="}], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    assert tokenizer.decode(ids[n_prompt:]) == "7<|im_end|>"


def test_encode_messages_targets_every_assistant_message(tokenizer):
    cfg = SFTConfig(model_path="m", actor={"name": "fsdp"}, train_dataset={"path": "x"})
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye"}]}
    ids, mask = encode_example(row, tokenizer, cfg)
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "hello<|im_end|>bye<|im_end|>"
    single = {"messages": row["messages"][:2]}
    assert encode_example(single, tokenizer, cfg) == encode_example({"prompt": "hi", "completion": "hello"}, tokenizer, cfg)
    with pytest.raises(ArealError, match="field 'messages': the conversation has no assistant message"):
        encode_example({"messages": [{"role": "user", "content": "hi"}]}, tokenizer, cfg)
    with pytest.raises(ArealError, match=r"has neither 'prompt' \+ 'completion'"):
        encode_example({"question": "q", "sample_id": "s1"}, tokenizer, cfg)


def test_nll_counts_only_completion_tokens():
    batch = pack([([5, 6, 7], [0, 1, 1]), ([8, 9], [0, 1])])
    logprobs = torch.tensor([-9.0, -1.0, -2.0, -9.0, -3.0])
    loss, _ = nll_loss(logprobs, torch.zeros(5), batch)
    assert float(loss) == pytest.approx(1.0 + 2.0 + 3.0)  # prompt tokens (-9) are not counted


def test_batches_walk_the_epochs_in_the_seeded_order(tmp_path, tiny):
    trainer = OfflineTrainer(sft_config(tmp_path, tiny), tmp_path / "run", "sft")
    trainer.examples = [None] * 40
    from areal_core.data.dataset import EpochDataLoader

    trainer.loader = EpochDataLoader([{"sample_id": str(i)} for i in range(40)], seed=1)
    seen = [i for step in range(5) for i in trainer.batch_indices(step)[0]]  # 80 rows = 2 epochs
    assert seen[:40] == trainer.loader.order(0) and seen[40:] == trainer.loader.order(1)
    assert trainer.batch_indices(2)[1] == 0 and trainer.batch_indices(3)[1] == 1  # epoch of the step's first row


def test_sft_lowers_the_loss_and_exports_a_loadable_model(tmp_path, tiny):
    out = run_sft(sft_config(tmp_path, tiny))
    rows = [json.loads(line) for line in (tmp_path / "runs" / "areal-sft" / "trial0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(0, 13))
    assert rows[-1]["sft/loss"] < 0.7 * rows[1]["sft/loss"]
    evals = [r["sft/eval_loss"] for r in rows if r.get("sft/eval_loss") is not None]
    assert len(evals) == 3 and evals[2] < evals[1] < evals[0]  # steps 0, 6, 12
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out) is not None
    with pytest.raises(ArealError, match="already holds a run"):
        run_sft(sft_config(tmp_path, tiny))
