"""Structured logging: JSON lines (or text) carrying the correlation id of the work at hand.

The correlation id and task id live in context variables so that every log line written while
handling a task's RPC or step result carries them without threading them through every call.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

__all__ = ["bind", "configure_logging", "correlation_id_var", "task_id_var"]

correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "correlation_id", default=""
)
task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="")

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


@contextmanager
def bind(*, correlation_id: str = "", task_id: str = "") -> Iterator[None]:
    """Attaches a correlation id and task id to every log line in this context."""
    tokens = []
    if correlation_id:
        tokens.append((correlation_id_var, correlation_id_var.set(correlation_id)))
    if task_id:
        tokens.append((task_id_var, task_id_var.set(task_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            # A streaming handler (an async generator) whose client went away is closed by the
            # event loop in another context: its tokens cannot be reset there, and the values
            # end with the generator's own context anyway.
            with suppress(ValueError):
                var.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", ""):
            record.correlation_id = correlation_id_var.get()
        if not getattr(record, "task_id", ""):
            record.task_id = task_id_var.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and value not in ("", None):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _RESERVED and v not in ("", None)
        ]
        return f"{text} {' '.join(extras)}" if extras else text


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Installs one stderr handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_tasker", False):
            root.removeHandler(old)
    handler._tasker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty third-party loggers stay at warning unless debugging.
    for name in ("sqlalchemy", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
