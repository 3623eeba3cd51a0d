"""``model_path`` as a local directory or a Hugging Face hub id (``org/name``).

:func:`resolve_model_path` turns either into a local directory, once, before anything loads it:

* an existing path is returned as it is;
* ``org/name`` is looked up in the Hugging Face cache (``HF_HUB_CACHE``, else
  ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) with ``snapshot_download(...,
  local_files_only=True)``; found, its snapshot directory is returned;
* not cached: with ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, an ArealError names
  the id and says to pass a local directory or point ``HF_HOME``/``HF_HUB_CACHE`` at a cache
  that holds it; online, the snapshot is downloaded into the cache and returned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areal_core.errors import ArealError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE = ("1", "on", "yes", "true")


def hub_cache_dir() -> Path:
    """The cache huggingface_hub uses, read from the environment now (not at its import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_hub_id(value: str) -> bool:
    return bool(HUB_ID.match(value)) and not value.startswith((".", "~"))


def resolve_model_path(value: str, field: str = "model_path") -> str:
    """A local model directory for ``value`` (a path, or a hub id; see module docstring)."""
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    if not looks_like_hub_id(value):
        raise ArealError(f"{field}: {value!r} is not a Hugging Face model directory (no such directory), nor a "
                         "hub id of the form org/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        return str(snapshot_download(value, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    advice = (f"pass a local model directory as {field}, or set HF_HOME / HF_HUB_CACHE to a Hugging Face cache "
              f"that holds {value!r}")
    if hub_offline():
        raise ArealError(f"{field}: {value!r} is not a local directory, and the Hugging Face hub id {value!r} is "
                         f"not in the cache {str(cache)!r} (offline: HF_HUB_OFFLINE is set); {advice}") from None
    try:
        return str(snapshot_download(value, cache_dir=cache))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ArealError(f"{field}: cannot download the Hugging Face hub id {value!r} into {str(cache)!r} "
                         f"({type(exc).__name__}: {str(exc)[:200]}); {advice}") from None
