"""Structured logging for every service: JSON lines, redacted, with the run id when there is one."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from shared.config import Settings
from shared.redaction import RedactingFilter

# What every log record of the current request or task is about: runId, attempt, task,
# requestId. Set by the api per request and by a Celery task_prerun signal per task; the
# request id travels between services in a Celery message header.
CONTEXT_FIELDS = ("runId", "attempt", "task", "requestId")
_context: ContextVar[dict[str, Any] | None] = ContextVar("sandbox_log_context", default=None)


def bind_context(**values: Any) -> Token[dict[str, Any] | None]:
    """Add fields to the log context of this thread/task; returns a token for ``reset_context``."""
    merged = {**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}}
    return _context.set(merged)


def reset_context(token: Token[dict[str, Any] | None] | None = None) -> None:
    """Restore the context before ``token`` (or empty it)."""
    if token is None:
        _context.set(None)
    else:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """Return the fields bound to the current context."""
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copy the bound context onto every record, without overriding an explicit ``extra``."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _TextFormatter(logging.Formatter):
    """Human-readable lines that still end with the run's context (``runId=… attempt=…``)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if hasattr(record, k)]
        return f"{line} [{' '.join(pairs)}]" if pairs else line


def configure_logging(service: str, settings: Settings) -> None:
    """Send this process's logs to stderr as JSON (or text), through the redactor."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Celery's "Task ... received" line repeats what our "task ... started" line says (the run
    # id, with the request id): one formatted, redacted line fewer per task.
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)
