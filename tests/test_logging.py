"""structlog setup: console by default, JSON lines by flag or env, levels, stdlib loggers, log file."""

from __future__ import annotations

import io
import json
import logging

import pytest

from areal_core.errors import ArealError
from areal_core.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    configure_logging(stream=io.StringIO())  # leave no handler pointing at a closed test stream


def test_console_is_readable_by_default(monkeypatch):
    monkeypatch.delenv("AREAL_LOG_JSON", raising=False)
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("areal_core.demo").info("step done", step=3, loss=0.25)
    line = out.getvalue().strip()
    assert "[info" in line and "step done" in line and "loss=0.25" in line and "step=3" in line and "[areal_core.demo]" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_json_lines_by_flag():
    out = io.StringIO()
    configure_logging(json_logs=True, stream=out)
    get_logger("areal_core.demo").warning("slow reward", seconds=31.5)
    record = json.loads(out.getvalue())
    assert record["event"] == "slow reward" and record["level"] == "warning" and record["seconds"] == 31.5
    assert record["logger"] == "areal_core.demo" and record["timestamp"].endswith("Z")


def test_json_lines_by_env_and_stdlib_loggers_share_the_format(monkeypatch):
    monkeypatch.setenv("AREAL_LOG_JSON", "1")
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("some_library.module").warning("weights %s", "tied")
    record = json.loads(out.getvalue())
    assert record == {**record, "event": "weights tied", "logger": "some_library.module", "level": "warning"}


def test_level_filters_and_is_validated(monkeypatch):
    out = io.StringIO()
    configure_logging(level="warning", stream=out)
    log = get_logger("x")
    log.info("hidden")
    log.error("shown")
    assert "hidden" not in out.getvalue() and "shown" in out.getvalue()
    monkeypatch.setenv("AREAL_LOG_LEVEL", "debug")
    configure_logging(stream=out)
    log.debug("now visible")
    assert "now visible" in out.getvalue()
    with pytest.raises(ArealError, match="log level 'loud' is not one of debug, info, warning, error"):
        configure_logging(level="loud")


def test_exceptions_in_json_and_a_log_file(tmp_path):
    out = io.StringIO()
    configure_logging(json_logs=True, stream=out, file=tmp_path / "logs" / "log.jsonl")
    try:
        raise ValueError("bad batch")
    except ValueError:
        get_logger("x").exception("step failed", step=2)
    for text in (out.getvalue(), (tmp_path / "logs" / "log.jsonl").read_text()):
        record = json.loads(text)
        assert record["step"] == 2 and record["exception"][0]["exc_type"] == "ValueError"


def test_reconfiguring_replaces_handlers():
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger("x").info("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1
