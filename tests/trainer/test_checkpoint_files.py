"""areal_core.trainer.checkpoint: atomic write, the last K kept, a failed save leaves the previous one."""

import json
import random

import pytest

from areal_core.trainer import checkpoint as ckpt
from areal_core.trainer.rl import _truncate_jsonl


class FileEngine:
    """Stands in for a train engine's save(): writes one file into its directory."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    def save(self, path):
        if self.fail:
            raise RuntimeError("disk full")
        import pathlib

        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "weights.bin").write_bytes(b"w")


def test_save_keeps_the_last_and_restores_state_and_rng(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"actor": FileEngine()}, {"version": step, "data": [1, 2]})
    root = tmp_path / ckpt.CHECKPOINT_DIR
    assert sorted(p.name for p in root.iterdir()) == ["step2", "step3"]  # keep=2 by default
    assert (root / "step3" / "actor" / "weights.bin").is_file()
    random.seed(5)
    ckpt.save_checkpoint(tmp_path, 4, {"actor": FileEngine()}, {"version": 4})
    expected = random.random()
    random.seed(99)
    state = ckpt.load_state(ckpt.latest_checkpoint(tmp_path))
    assert state["step"] == 4 and state["version"] == 4
    assert random.random() == expected  # the trainer's RNG continues where it was


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, {"actor": FileEngine()}, {"version": 1})
    with pytest.raises(RuntimeError):
        ckpt.save_checkpoint(tmp_path, 2, {"actor": FileEngine(fail=True)}, {"version": 2})
    assert ckpt.latest_checkpoint(tmp_path).name == "step1"
    assert not (tmp_path / ckpt.CHECKPOINT_DIR / ".step2.tmp").exists()  # the partial write is removed
    ckpt.save_checkpoint(tmp_path, 2, {"actor": FileEngine()}, {"version": 2}, keep=1)
    assert sorted(p.name for p in (tmp_path / ckpt.CHECKPOINT_DIR).iterdir()) == ["step2"]


def test_state_must_be_json(tmp_path):
    from areal_core.errors import ArealError

    with pytest.raises(ArealError, match="not JSON data"):
        ckpt.save_checkpoint(tmp_path, 1, {}, {"sample": object()})
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_rows_after_the_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (0, 1, 2, 3, 2)))
    _truncate_jsonl(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 2]
