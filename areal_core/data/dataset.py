"""Local datasets for RL runs: load JSONL / parquet / a saved ``datasets`` directory, offline, and
iterate them epoch by epoch in a seeded order that a recovered run reproduces exactly.

    rows = load_rows(DatasetConfig(path="data/train.jsonl"))      # list of plain dicts
    loader = EpochDataLoader(rows, seed=1, shuffle=True)
    loader.set_epoch(3); list(loader)                             # epoch 3's order, always the same

**Sample ids.** Every row gets a ``sample_id``: its own ``sample_id`` or ``id`` field when it has
one, else ``"<file stem>-<row index>"``. Ids must be unique within a dataset (an ArealError names
the first duplicate): recovery and the "no sample trained twice" audit rely on them.

**Order.** Epoch e visits the rows in the permutation ``random.Random(f"{seed}/{e}").shuffle``
(string seeds are hashed with SHA-512 by Python, so the order is the same on every machine and
Python run), or in file order with ``shuffle=False``. The loader holds no position of its own: the
rollout controller counts the items it took (``areal_core.rollout.controller``) and, after a
recovery, skips that many in the restored epoch. :meth:`EpochDataLoader.state_dict` records the
seed and a fingerprint of the ids so that a recovery onto a different dataset fails loudly.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from areal_core.errors import ArealError

SUFFIX_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(config, field: str = "train_dataset") -> list[dict[str, Any]]:
    """The rows of a :class:`~areal_core.config.schema.DatasetConfig`, each with a ``sample_id``.

    ``field`` names the config section in error messages. Loads through ``datasets`` with
    ``HF_DATASETS_OFFLINE=1`` (nothing is downloaded); ``max_samples`` keeps the first N rows.
    """
    path = Path(config.path).expanduser()
    if not path.exists():
        raise ArealError(f"{field}.path: {str(path)!r} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ArealError(f"{field}.path: {str(path)!r} is empty (no rows)")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                split = config.split or ("train" if "train" in loaded else None)
                if split not in loaded:
                    raise ArealError(f"{field}.split: {config.split!r} is not a split of {str(path)!r}; "
                                     f"splits: {', '.join(loaded)}")
                loaded = loaded[split]
        else:
            fmt = SUFFIX_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise ArealError(f"{field}.path: {str(path)!r} has an unknown suffix; use one of "
                                 f"{', '.join(SUFFIX_FORMATS)} or a datasets directory")
            loaded = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except ArealError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed file: name it
        raise ArealError(f"{field}.path: cannot load {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if config.max_samples is not None:
        loaded = loaded.select(range(min(config.max_samples, len(loaded))))
    rows = [dict(r) for r in loaded]
    if not rows:
        raise ArealError(f"{field}.path: {str(path)!r} has no rows")
    return with_sample_ids(rows, prefix=path.stem, field=field)


def with_sample_ids(rows: list[dict[str, Any]], prefix: str, field: str = "dataset") -> list[dict[str, Any]]:
    """Give each row a unique ``sample_id`` (its own ``sample_id``/``id``, else ``prefix-index``)."""
    seen: dict[str, int] = {}
    out = []
    for i, row in enumerate(rows):
        own = row.get("sample_id", row.get("id"))
        sid = str(own) if own is not None else f"{prefix}-{i}"
        if sid in seen:
            raise ArealError(f"{field}: rows {seen[sid]} and {i} have the same sample id {sid!r}; "
                             f"ids (the sample_id or id field) must be unique")
        seen[sid] = i
        out.append({**row, "sample_id": sid})
    return out


class EpochDataLoader:
    """Re-iterable over sample dicts, in a seeded order per epoch (see the module docstring)."""

    def __init__(self, rows: list[dict[str, Any]], seed: int = 1, shuffle: bool = True):
        if not rows:
            raise ArealError("EpochDataLoader needs at least one row")
        self.rows = rows
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """Row indices in the order epoch ``epoch`` visits them."""
        idx = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(f"{self.seed}/{epoch}").shuffle(idx)
        return idx

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in self.order(self.epoch):
            yield self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprint(self) -> str:
        """SHA-1 of the sample ids in file order: changes when the dataset does."""
        h = hashlib.sha1()
        for row in self.rows:
            h.update(row["sample_id"].encode() + b"\0")
        return h.hexdigest()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "shuffle": self.shuffle, "n_rows": len(self.rows), "fingerprint": self.fingerprint()}

    def check_state(self, state: dict[str, Any], field: str = "train_dataset") -> None:
        """Fail when a checkpoint was written for a different dataset, seed or shuffle setting."""
        mine = self.state_dict()
        diff = [k for k in mine if k in state and state[k] != mine[k]]
        if diff:
            raise ArealError(f"{field}: the checkpoint was written for a different dataset order "
                             f"({', '.join(f'{k}: {state[k]!r} then, {mine[k]!r} now' for k in diff)}); "
                             f"recover with the same dataset and seed, or start a new trial_name")
