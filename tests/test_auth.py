"""The run key lives in the environment only for the run that made it."""

import os

from areal_core.auth import API_KEY_ENV, auth_headers, run_key


def test_a_generated_key_is_removed_after_the_run(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with run_key() as key:
        assert os.environ[API_KEY_ENV] == key and len(key) >= 32
        assert auth_headers() == {"Authorization": f"Bearer {key}"}
    assert API_KEY_ENV not in os.environ and auth_headers() == {}


def test_an_operators_key_is_used_and_kept(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "operator-key")
    with run_key() as key:
        assert key == "operator-key"
    assert os.environ[API_KEY_ENV] == "operator-key"
