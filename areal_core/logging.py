"""structlog setup: readable console lines by default, JSON lines on request.

    configure_logging(level="info", json_logs=False)
    log = get_logger(__name__); log.info("step done", step=3, loss=0.25)

Console: ``2025-01-01T12:00:00Z [info     ] step done   [areal_core.trainer] loss=0.25 step=3``.
JSON (``json_logs=True`` or ``AREAL_LOG_JSON=1``): one object per line with ``event``,
``level``, ``logger``, ``timestamp`` and the bound key-values. Standard-library loggers
(transformers, httpx, ...) go through the same formatter, so a JSON stream stays all JSON.
Context bound with ``structlog.contextvars.bind_contextvars(rank=0)`` appears on every line.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO, Any

import structlog

from areal_core.errors import ArealError

LEVELS = ("debug", "info", "warning", "error")
HANDLER_NAME = "areal"  # the root handlers configure_logging installs (and replaces on the next call)
TRUE_VALUES = ("1", "true", "yes", "on")

get_logger = structlog.get_logger


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def configure_logging(level: str | None = None, json_logs: bool | None = None, stream: IO[str] | None = None,
                      file: str | Path | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr by default); call again to change.

    ``level``: debug/info/warning/error, default ``AREAL_LOG_LEVEL`` or info. ``json_logs``:
    default ``AREAL_LOG_JSON``. ``file``: also append JSON lines there (e.g. ``RUN_DIR/log.jsonl``).
    """
    level = (level or os.environ.get("AREAL_LOG_LEVEL") or "info").lower()
    if level not in LEVELS:
        raise ArealError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    json_logs = env_flag("AREAL_LOG_JSON") if json_logs is None else json_logs
    stream = stream or sys.stderr

    shared: list[Any] = [  # structlog processors
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    handlers[0].setFormatter(_formatter(shared, json_logs, colors=hasattr(stream, "isatty") and stream.isatty()))
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
        handlers[-1].setFormatter(_formatter(shared, json_logs=True, colors=False))

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.set_name(HANDLER_NAME)  # marks the handlers a later call replaces
        root.addHandler(handler)
    root.setLevel(level.upper())


def _formatter(shared: list[Any], json_logs: bool, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    tail: list[Any]
    if json_logs:
        tracebacks = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        tail = [tracebacks, structlog.processors.JSONRenderer()]
    else:
        tail = [structlog.dev.ConsoleRenderer(colors=colors)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
