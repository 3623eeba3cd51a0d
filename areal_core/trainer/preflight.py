"""Pre-flight checks of a run, before any process starts (servers take minutes to start on GPUs).

:func:`check_run` reports every problem at once, each naming the config field:

* ``model_path``: a directory with a ``config.json`` that parses, whose ``model_type`` the
  installed transformers knows, with weight files (``*.safetensors``, ``*.bin``) and tokenizer
  files;
* ``train_dataset`` / ``valid_dataset``: exist, load, hold at least one row, and every row has
  the workflow's prompt field (when the workflow config declares ``prompt_field``; a row may
  carry ``messages`` instead);
* batch arithmetic: an algorithm's ``n_minibatches`` is at most the sequences of one batch
  (``rollout.batch_size`` × the workflow's ``n_samples``).

(Run names are confined to ``fileroot`` by the config schema itself.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from areal_core.errors import ArealError
from areal_core.hub import resolve_model_path

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
ROWS_SHOWN = 3


def check_run(cfg) -> None:
    """ArealError listing every problem of the resolved run config ``cfg`` (see module docstring)."""
    run = cfg.run
    problems = model_problems(run.model_path)
    workflow = cfg.components.get("workflow")
    for name in ("train_dataset", "valid_dataset"):
        section = getattr(run, name)
        if section is not None:
            problems += dataset_problems(section, name, getattr(workflow, "prompt_field", None))
    problems += batch_problems(run.rollout.batch_size, int(getattr(workflow, "n_samples", 1) or 1),
                               cfg.components.get("algorithm"))
    if problems:
        raise ArealError("invalid config:\n  " + "\n  ".join(problems))


def model_problems(model_path: str, field: str = "model_path") -> list[str]:
    try:  # a hub id is checked in its cached snapshot; one that does not resolve says why (offline, not cached, ...)
        path = Path(resolve_model_path(model_path, field))
    except ArealError as exc:
        return [str(exc)]
    if not path.is_dir():
        return [f"{field}: {model_path!r} is not a directory"]
    config_file = path / "config.json"
    if not config_file.is_file():
        return [f"{field}: {model_path!r} has no config.json (not a Hugging Face model directory)"]
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{field}: {config_file} does not parse as JSON ({exc})"]
    problems = []
    model_type = config.get("model_type") if isinstance(config, dict) else None
    known = _known_model_types()
    if model_type not in known:
        import difflib

        import transformers

        close = difflib.get_close_matches(str(model_type), known, n=1)
        problems.append(f"{field}: config.json has model_type {model_type!r}, which transformers "
                        f"{transformers.__version__} does not know" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        problems.append(f"{field}: {model_path!r} has no weight files ({', '.join(WEIGHT_PATTERNS)})")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{field}: {model_path!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return problems


def dataset_problems(section, field: str, prompt_field: str | None) -> list[str]:
    from areal_core.data.dataset import load_rows

    try:
        rows = load_rows(section, field)
    except ArealError as exc:
        return [str(exc)]
    if not rows:
        return [f"{field}.path: {section.path!r} holds no rows"]
    if prompt_field is None:
        return []
    missing = [i for i, row in enumerate(rows) if not _has_prompt(row, prompt_field)]
    if not missing:
        return []
    shown = ", ".join(str(i) for i in missing[:ROWS_SHOWN]) + (", ..." if len(missing) > ROWS_SHOWN else "")
    return [f"{field}.path: {len(missing)} of {len(rows)} rows of {section.path!r} have neither {prompt_field!r} "
            f"(workflow.prompt_field) nor 'messages' (rows {shown}; first row's fields: {sorted(rows[missing[0]])})"]


def batch_problems(batch_size: int, n_samples: int, algorithm: Any) -> list[str]:
    sequences = batch_size * n_samples
    n_minibatches = getattr(algorithm, "n_minibatches", None)
    if isinstance(n_minibatches, int) and n_minibatches > sequences:
        return [f"algorithm.n_minibatches={n_minibatches} exceeds the {sequences} sequences of a batch "
                f"(rollout.batch_size={batch_size} x workflow.n_samples={n_samples}): lower it or grow the batch"]
    return []


def _has_prompt(row: dict[str, Any], prompt_field: str) -> bool:
    return row.get(prompt_field) not in (None, "") or bool(row.get("messages"))


def _known_model_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)
