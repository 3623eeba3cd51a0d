"""Turn GSM8K into the local JSONL files that ``areal train`` reads.

    areal-gsm8k-data --out data/gsm8k                          # openai/gsm8k (config "main") from the hub
    areal-gsm8k-data --source ~/gsm8k --out data/gsm8k         # a local copy, no network
    areal-gsm8k-data --source test.jsonl --splits test --out data/gsm8k    # one file = one split

``--source`` is a hub dataset id (loaded with ``datasets.load_dataset(source, "main")``, which
needs the network), or a local path: a directory written by ``DatasetDict.save_to_disk``; a
directory of files named ``<split>*.parquet`` / ``<split>*.jsonl`` / ``<split>*.json`` (the hub
repository's layout, ``main/train-00000-of-00001.parquet``, works as downloaded); or one such
file holding the one split given by ``--splits``.

Each split becomes ``OUT/<split>.jsonl``, one problem per line::

    {"id": "gsm8k-train-00000",
     "messages": [{"role": "user", "content": "<question>\\n<instruction>"}],
     "question": "<question>",
     "answer": "<the reference solution, ending in '#### 72'>"}

``id`` is the sample id that recovery and the audit use; ``messages`` is what the ``rlvr``
workflow renders with the model's chat template (``workflow.messages_field``); ``answer`` is what
the ``gsm8k`` reward compares with (``reward.answer_field``; the text after ``####``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from areal_core.plugin import ArealError

HUB_DATASET = "openai/gsm8k"
HUB_CONFIG = "main"
DEFAULT_SPLITS = ("train", "test")
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
FILE_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def to_rlvr_row(row: dict[str, Any], sample_id: str, instruction: str = DEFAULT_INSTRUCTION,
                system_prompt: str | None = None) -> dict[str, Any]:
    """One GSM8K problem (``question``, ``answer``) as a training row (see the module docstring)."""
    missing = [k for k in ("question", "answer") if k not in row]
    if missing:
        raise ArealError(f"GSM8K row {sample_id!r} lacks {missing}; its fields: {sorted(row)}")
    question = str(row["question"]).strip()
    content = f"{question}\n{instruction}" if instruction else question
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": content}]
    return {"id": sample_id, "messages": messages, "question": question, "answer": str(row["answer"])}


def load_splits(source: str, splits: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The raw rows of each split of ``source`` (a hub id or a local path, module docstring)."""
    splits = list(splits)
    import datasets

    datasets.disable_progress_bars()
    path = Path(source).expanduser()
    if path.is_file():
        if len(splits) != 1:
            raise ArealError(f"--source {source!r} is one file, which holds one split; name it with --splits "
                             f"(got {splits})")
        return {splits[0]: _load_files([path])}
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            return _select(datasets.load_from_disk(str(path)), splits, source)
        root = path / HUB_CONFIG if (path / HUB_CONFIG).is_dir() else path
        out = {}
        for split in splits:
            files = sorted(p for p in root.glob(f"{split}*") if p.suffix in FILE_SUFFIXES)
            if not files:
                raise ArealError(f"--source {source!r}: no file named {split}*.parquet/.jsonl/.json in {str(root)!r}")
            out[split] = _load_files(files)
        return out
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ArealError(f"--source {source!r} is not a local path and the hub is off (HF_DATASETS_OFFLINE / "
                         f"HF_HUB_OFFLINE=1): pass a local copy with --source PATH")
    try:
        loaded = datasets.load_dataset(source, HUB_CONFIG)
    except Exception as exc:  # noqa: BLE001 - no network, unknown id: say what to do instead
        raise ArealError(f"cannot load {source!r} (config {HUB_CONFIG!r}) from the Hugging Face hub: "
                         f"{type(exc).__name__}: {exc}\n  on a machine without network, download it elsewhere "
                         f"and pass the directory with --source PATH") from None
    return _select(loaded, splits, source)


def convert(source: str, out_dir: str | Path, splits: Iterable[str] = DEFAULT_SPLITS,
            instruction: str = DEFAULT_INSTRUCTION, system_prompt: str | None = None,
            max_samples: int | None = None) -> dict[str, Path]:
    """Write ``out_dir/<split>.jsonl`` for each split; returns {split: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, rows in load_splits(source, splits).items():
        rows = rows[:max_samples] if max_samples is not None else rows
        path = out_dir / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps(to_rlvr_row(row, f"gsm8k-{split}-{i:05d}", instruction, system_prompt),
                                   ensure_ascii=False) + "\n")
        tmp.replace(path)  # no half-written file under the final name
        written[split] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="areal-gsm8k-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=HUB_DATASET, help=f"hub dataset id or local path (default {HUB_DATASET})")
    parser.add_argument("--out", required=True, type=Path, help="directory for <split>.jsonl")
    parser.add_argument("--splits", default=",".join(DEFAULT_SPLITS), help="comma-separated splits (default train,test)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION,
                        help="appended to each question on a new line ('' for none)")
    parser.add_argument("--system-prompt", default=None, help="a system message before the question (default none)")
    parser.add_argument("--max-samples", type=int, default=None, help="keep the first N problems of each split")
    args = parser.parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max-samples must be >= 1")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        written = convert(args.source, args.out, splits, args.instruction, args.system_prompt, args.max_samples)
    except ArealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, path in written.items():
        n = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"{split}: {n} problems -> {path}")
    return 0


def _load_files(files: list[Path]) -> list[dict[str, Any]]:
    import datasets

    fmt = FILE_SUFFIXES.get(files[0].suffix)
    if fmt is None or any(FILE_SUFFIXES.get(f.suffix) != fmt for f in files):
        raise ArealError(f"cannot read {[str(f) for f in files]}: use .parquet, .jsonl or .json files of one kind")
    try:
        loaded = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # noqa: BLE001 - a malformed file: name it
        raise ArealError(f"cannot read {[str(f) for f in files]}: {type(exc).__name__}: {exc}") from None
    return [dict(r) for r in loaded]


def _select(loaded, splits: list[str], source: str) -> dict[str, list[dict[str, Any]]]:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        if len(splits) != 1:
            raise ArealError(f"--source {source!r} holds one dataset, not splits; name it with one --splits (got {splits})")
        return {splits[0]: [dict(r) for r in loaded]}
    unknown = [s for s in splits if s not in loaded]
    if unknown:
        raise ArealError(f"--source {source!r} has no split {unknown}; its splits: {list(loaded)}")
    return {s: [dict(r) for r in loaded[s]] for s in splits}


if __name__ == "__main__":
    sys.exit(main())
