"""The GSM8K converter on tiny local fake-GSM8K files: every source layout, the rows the trainer
reads (load_rows, the rlvr workflow's prompt), the gsm8k reward on them, and its errors."""

import json

import pytest

from areal_core.config.schema import DatasetConfig
from areal_core.data.dataset import load_rows
from areal_core.errors import ArealError
from areal_math.gsm8k_data import DEFAULT_INSTRUCTION, convert, main, to_rlvr_row
from areal_math.reward import GSM8KConfig, MathAnswerReward

FAKE = {
    "train": [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
         "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
        {"question": "A pen costs $2. How much do 6 pens cost?", "answer": "6 * 2 = <<6*2=12>>12\n#### 12"},
        {"question": "A shop sold 1,200 cups and 300 more. How many?", "answer": "1200 + 300 = 1500\n#### 1,500"},
    ],
    "test": [{"question": "What is 10 - 4?", "answer": "10 - 4 = <<10-4=6>>6\n#### 6"}],
}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def hub_layout(tmp_path):
    """The hub repository's layout: main/<split>-00000-of-00001.<ext>."""
    for split, rows in FAKE.items():
        write_jsonl(tmp_path / "gsm8k" / "main" / f"{split}-00000-of-00001.jsonl", rows)
    return tmp_path / "gsm8k"


def test_row_format():
    row = to_rlvr_row(FAKE["train"][0], "gsm8k-train-00000")
    assert row == {"id": "gsm8k-train-00000",
                   "messages": [{"role": "user", "content": FAKE["train"][0]["question"] + "\n" + DEFAULT_INSTRUCTION}],
                   "question": FAKE["train"][0]["question"], "answer": FAKE["train"][0]["answer"]}
    with_system = to_rlvr_row(FAKE["train"][0], "x", instruction="", system_prompt="Be brief.")
    assert with_system["messages"] == [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": FAKE["train"][0]["question"]}]


def test_hub_layout_directory_converts_both_splits(hub_layout, tmp_path):
    written = convert(str(hub_layout), tmp_path / "out")
    assert set(written) == {"train", "test"}
    train = read_jsonl(written["train"])
    assert [r["id"] for r in train] == ["gsm8k-train-00000", "gsm8k-train-00001", "gsm8k-train-00002"]
    assert [r["answer"] for r in train] == [r["answer"] for r in FAKE["train"]]
    assert read_jsonl(written["test"])[0]["id"] == "gsm8k-test-00000"
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_output_is_what_the_trainer_reads(hub_layout, tmp_path):
    """load_rows keeps the ids; the rlvr workflow renders `messages`; the gsm8k reward scores `answer`."""
    from areal_core.rollout.rlvr import RLVRConfig, RLVRWorkflow
    from areal_core.testing.tiny import make_tokenizer

    written = convert(str(hub_layout), tmp_path / "out", splits=["train"])
    rows = load_rows(DatasetConfig(path=str(written["train"])))
    assert [r["sample_id"] for r in rows] == ["gsm8k-train-00000", "gsm8k-train-00001", "gsm8k-train-00002"]
    workflow = RLVRWorkflow(RLVRConfig(name="rlvr"), lambda p, c, s: 0.0, make_tokenizer())
    prompt, input_ids = workflow.encode_prompt(rows[0])
    assert prompt.startswith("<|im_start|>user\nTom has 3 apples") and prompt.endswith("<|im_start|>assistant\n")
    assert input_ids
    reward = MathAnswerReward(GSM8KConfig(name="gsm8k"))
    assert [reward(prompt, "... so \\boxed{1500}", r) for r in rows] == [0.0, 0.0, 1.0]


def test_saved_datasetdict_and_parquet_sources(tmp_path):
    import datasets

    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in FAKE.items()})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(read_jsonl(convert(str(tmp_path / "saved"), tmp_path / "a")["train"])) == 3
    (tmp_path / "pq").mkdir()
    for split in FAKE:
        dd[split].to_parquet(str(tmp_path / "pq" / f"{split}-00000-of-00001.parquet"))
    written = convert(str(tmp_path / "pq"), tmp_path / "b", max_samples=2)
    assert [len(read_jsonl(p)) for p in written.values()] == [2, 1]


def test_single_file_is_one_named_split(tmp_path):
    src = write_jsonl(tmp_path / "mine.jsonl", FAKE["test"])
    assert read_jsonl(convert(str(src), tmp_path / "out", splits=["test"])["test"])[0]["id"] == "gsm8k-test-00000"
    with pytest.raises(ArealError, match=r"is one file, which holds one split; name it with --splits"):
        convert(str(src), tmp_path / "out")


def test_errors_name_what_is_wrong(tmp_path, hub_layout, monkeypatch):
    with pytest.raises(ArealError, match=r"no file named validation\*\.parquet/\.jsonl/\.json"):
        convert(str(hub_layout), tmp_path / "out", splits=["validation"])
    bad = write_jsonl(tmp_path / "bad" / "train.jsonl", [{"problem": "1+1?", "answer": "2"}])
    with pytest.raises(ArealError, match=r"row 'gsm8k-train-00000' lacks \['question'\]; its fields: \['answer', 'problem'\]"):
        convert(str(bad.parent), tmp_path / "out", splits=["train"])
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ArealError, match=r"is not a local path and the hub is off"):
        convert("openai/gsm8k", tmp_path / "out")


def test_cli(hub_layout, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the missing path below must not reach for the hub
    assert main(["--source", str(hub_layout), "--out", str(tmp_path / "out"), "--instruction", "Answer with ####."]) == 0
    assert capsys.readouterr().out.splitlines() == [f"train: 3 problems -> {tmp_path / 'out' / 'train.jsonl'}",
                                                    f"test: 1 problems -> {tmp_path / 'out' / 'test.jsonl'}"]
    assert read_jsonl(tmp_path / "out" / "test.jsonl")[0]["messages"][0]["content"].endswith("\nAnswer with ####.")
    assert main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2"), "--splits", "dev"]) == 2
    assert "error:" in capsys.readouterr().err
