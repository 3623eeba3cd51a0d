"""areal_core.data.dataset: offline loading, stable sample ids, the seeded per-epoch order."""

import json

import pytest

from areal_core.config.schema import DatasetConfig
from areal_core.data.dataset import EpochDataLoader, load_rows
from areal_core.errors import ArealError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_rows_get_ids_and_max_samples(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"p{i}"} for i in range(5)] + [{"id": 42, "prompt": "x"}])
    rows = load_rows(DatasetConfig(path=str(path)))
    assert [r["sample_id"] for r in rows] == ["train-0", "train-1", "train-2", "train-3", "train-4", "42"]
    assert len(load_rows(DatasetConfig(path=str(path), max_samples=2))) == 2


def test_parquet_and_datasets_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": 2}])
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert [r["answer"] for r in load_rows(DatasetConfig(path=str(tmp_path / "d.parquet")))] == [1, 2]
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_rows(DatasetConfig(path=str(tmp_path / "dd"), split="test"))) == 2
    with pytest.raises(ArealError, match=r"valid_dataset.split: 'nope' is not a split.*test"):
        load_rows(DatasetConfig(path=str(tmp_path / "dd"), split="nope"), "valid_dataset")


def test_bad_inputs_name_the_field(tmp_path):
    with pytest.raises(ArealError, match="train_dataset.path: .*does not exist"):
        load_rows(DatasetConfig(path=str(tmp_path / "missing.jsonl")))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ArealError, match="unknown suffix"):
        load_rows(DatasetConfig(path=str(tmp_path / "x.txt")))
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1}, {"id": 2}, {"id": 1}])
    with pytest.raises(ArealError, match="rows 0 and 2 have the same sample id '1'"):
        load_rows(DatasetConfig(path=str(dup)))


def test_epoch_order_is_seeded_and_reproducible():
    rows = [{"sample_id": str(i)} for i in range(20)]
    loader = EpochDataLoader(rows, seed=7)
    loader.set_epoch(0)
    first = [r["sample_id"] for r in loader]
    loader.set_epoch(1)
    second = [r["sample_id"] for r in loader]
    assert sorted(first) == sorted(second) == sorted(r["sample_id"] for r in rows)
    assert first != second  # a new order each epoch
    again = EpochDataLoader(rows, seed=7)
    again.set_epoch(1)
    assert [r["sample_id"] for r in again] == second  # a recovered run sees the same order
    assert EpochDataLoader(rows, seed=8).order(0) != loader.order(0)
    assert EpochDataLoader(rows, shuffle=False).order(3) == list(range(20))


def test_checkpoint_onto_another_dataset_fails():
    loader = EpochDataLoader([{"sample_id": "a"}, {"sample_id": "b"}], seed=1)
    state = loader.state_dict()
    loader.check_state(state)
    with pytest.raises(ArealError, match="different dataset order.*seed: 1 then, 2 now"):
        EpochDataLoader(loader.rows, seed=2).check_state(state)
