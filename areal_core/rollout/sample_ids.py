"""Stable identifiers of dataset samples (recovery must know which samples were trained)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sample_id_of(sample: dict[str, Any]) -> str:
    """The sample's ``sample_id`` or ``id`` field, else a content hash (same content, same id).

    Example: ``sample_id_of({"id": 7, "prompt": "1+1"}) == "7"``.
    """
    for key in ("sample_id", "id"):
        if sample.get(key) is not None:
            return str(sample[key])
    blob = json.dumps(sample, sort_keys=True, default=str).encode()
    return "sha1-" + hashlib.sha1(blob).hexdigest()[:16]
