"""Files under faults (issue 16): a full disk, an unreadable newest checkpoint, a torn JSONL line,
and durability (every checkpoint file fsync'd before the rename). The disk is a real 1 MiB tmpfs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from areal_core.errors import ArealError
from areal_core.jsonl import keep_rows_through_step, read_rows
from areal_core.testing.faults import small_filesystem
from areal_core.trainer import checkpoint as ckpt


class TorchSaveEngine:
    """Saves like a train engine does (``torch.save`` of a state dict), ``numel`` float32s."""

    def __init__(self, numel: int):
        self.state = {"weight": torch.arange(numel, dtype=torch.float32)}

    def save(self, path):
        Path(path).mkdir(parents=True)
        torch.save(self.state, Path(path) / "model.pt")


def test_disk_full_during_a_checkpoint_names_path_and_size_and_leaves_no_tmp():
    """It used to be a 78-line torch traceback about inline_container.cc, with .tmp left behind."""
    with small_filesystem(1 << 20) as root:
        ckpt.save_checkpoint(root, 1, {"actor": TorchSaveEngine(1000)}, {"version": 1})
        with pytest.raises(ArealError) as err:
            ckpt.save_checkpoint(root, 2, {"actor": TorchSaveEngine(500_000)}, {"version": 2})
        message = str(err.value)
        assert "checkpoint step2: disk full writing" in message and ".step2.tmp" in message
        assert "needs about" in message and "free" in message and len(message.splitlines()) == 1
        assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["step1"]
        assert ckpt.latest_checkpoint(root).name == "step1"


def test_free_space_is_checked_before_writing():
    with small_filesystem(1 << 20) as root:
        ckpt.save_checkpoint(root, 1, {"actor": TorchSaveEngine(150_000)}, {"version": 1})  # ~600 KB
        with pytest.raises(ArealError, match=r"checkpoint step2: .*checkpoints needs about .* free but its file "
                                             r"system has"):
            ckpt.save_checkpoint(root, 2, {"actor": TorchSaveEngine(10)}, {"version": 2})
        assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["step1"]


def test_every_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    renamed_after: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed_after.append(len(synced)), real_replace(a, b))[1])
    path = ckpt.save_checkpoint(tmp_path, 1, {"actor": TorchSaveEngine(10)}, {"version": 1})
    before_rename = {p.replace(".step1.tmp", "step1") for p in synced[:renamed_after[0]]}
    files = {str(p) for p in path.rglob("*")}
    assert files and files <= before_rename


def test_newest_unreadable_checkpoint_falls_back_to_the_previous(tmp_path, log_text):
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, {"actor": TorchSaveEngine(100)}, {"version": step})
    shard = tmp_path / "checkpoints" / "step2" / "actor" / "model.pt"
    shard.write_bytes(shard.read_bytes()[:50])  # torn by a failing disk
    assert ckpt.latest_checkpoint(tmp_path).name == "step1"
    assert "falling back to an older one" in log_text.getvalue() and "actor/model.pt has 50 bytes" in log_text.getvalue()
    (tmp_path / "checkpoints" / "step1" / "trainer_state.json").write_text("{")
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_torn_last_jsonl_line_is_dropped_with_a_warning(tmp_path, log_text):
    """A torn last line used to make recover=auto fail with a bare JSONDecodeError."""
    path = tmp_path / "trained_samples.jsonl"
    path.write_text('{"step": 1, "ids": [1]}\n{"step": 2, "ids": [2]}\n{"step": 3, "ids": [')
    assert [r["step"] for r in read_rows(path)] == [1, 2]
    assert "dropping a torn last line" in log_text.getvalue() and str(path) in log_text.getvalue()
    keep_rows_through_step(path, 1)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1]


def test_corruption_inside_a_jsonl_file_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nGARBAGE\n{"step": 3}\n')
    with pytest.raises(ArealError, match=r"metrics.jsonl:2 is not a JSON object"):
        read_rows(path)
