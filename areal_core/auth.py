"""The per-run secret that authenticates every call to a run's inference servers.

``areal train`` generates one key per run (:func:`ensure_run_key`) and hands it to the processes
it starts through the environment variable ``AREAL_API_KEY``, never on a command line (argv is
readable by every user of the node through ``ps``). Servers refuse any request without
``Authorization: Bearer <key>``; the clients of the run send it (:func:`auth_headers`).

A standalone server (``areal serve``) takes the key from the same variable or ``--api-key``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

API_KEY_ENV = "AREAL_API_KEY"


def api_key() -> str | None:
    """The key of this run (``AREAL_API_KEY``), or None when none is set."""
    return os.environ.get(API_KEY_ENV) or None


def auth_headers() -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` when a key is set, else ``{}``."""
    key = api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def ensure_run_key() -> str:
    """The run's key: ``AREAL_API_KEY`` when the operator set one, else a fresh 256-bit secret,
    stored in this process's environment so that every process it starts inherits it."""
    key = api_key()
    if key is None:
        key = secrets.token_urlsafe(32)
        os.environ[API_KEY_ENV] = key
    return key


@contextlib.contextmanager
def run_key() -> Iterator[str]:
    """:func:`ensure_run_key` for the duration of one run: a key generated here is removed from this
    process's environment afterwards, so a later run in the same process (a notebook, a test
    session) gets a fresh one and servers started outside a run are not given it by accident."""
    generated = api_key() is None
    try:
        yield ensure_run_key()
    finally:
        if generated:
            os.environ.pop(API_KEY_ENV, None)
