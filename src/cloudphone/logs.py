"""Structured logging: one JSON object per line off a TTY, Rich console lines on one.

Engine lines carry the run they concern (``extra={"saga_id": …, "step": …}`` on logger
``cloudphone.saga``); both formats show those fields, and any other ``extra`` a caller passes.
Every line emitted while a step attempt runs, whatever its logger (a step's own included),
carries ``saga_id``, ``saga_type``, ``step`` and ``attempt`` (:class:`StepContextFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from cloudphone.saga.context import current_step
from cloudphone.settings import LogFormat, LogLevel

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_HANDLER_NAME = "cloudphone"
_FIRST = ("saga_id", "saga_type", "step", "attempt")
"""Fields shown first, so the run a line concerns is easy to spot."""


class StepContextFilter(logging.Filter):
    """Adds the running step attempt (``saga_id``, ``saga_type``, ``step``, ``attempt``).

    Reads :func:`cloudphone.saga.context.current_step`, which the engine sets around each
    attempt and compensation; fields a caller passed in ``extra=`` are kept as given.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag ``record`` if a step attempt is running; never drops it."""
        ctx = current_step()
        if ctx is not None:
            fields = record.__dict__
            fields.setdefault("saga_id", ctx.saga_id)
            fields.setdefault("saga_type", ctx.saga_type)
            fields.setdefault("step", ctx.step)
            fields.setdefault("attempt", ctx.attempt)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, the saga run's first."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    ordered = {k: fields.pop(k) for k in _FIRST if k in fields}
    ordered.update(fields)
    return ordered


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """``message key=value …`` for humans (Rich adds time and level)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its extras appended as ``key=value`` pairs."""
        message = record.getMessage()
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        text = f"{message}  {fields}" if fields else message
        if record.exc_info and not getattr(record, "_rich_traceback", False):
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(
    level: LogLevel = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Send every log line (ours, uvicorn's, the engine's) to ``stream`` (stderr) in one format.

    Args:
        level: Lowest level shown.
        fmt: ``json``, ``console``, or ``auto`` (console when ``stream`` is a TTY).
        stream: Where to write; stderr by default.
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler: logging.Handler
    if use_json:
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(file=out, stderr=out is sys.stderr),
            markup=False,
            rich_tracebacks=True,
            show_path=False,
        )
        handler.setFormatter(ConsoleFormatter())
    handler.set_name(_HANDLER_NAME)
    # On the handler, not a logger: it sees the records of every logger that propagates.
    handler.addFilter(StepContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:  # configured before: replace, never duplicate
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn configures its own handlers unless told otherwise; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # One line per SQL statement, or per Alembic context, is never what an operator wants
    # at INFO; cloudphone.schema logs the migrations it applies.
    for chatty in ("sqlalchemy", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
