"""Log lines: JSON with the saga id and step of engine lines; console keeps them too."""

from __future__ import annotations

import io
import json
import logging

from cloudphone.logs import ConsoleFormatter, JsonFormatter, configure_logging


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "cloudphone.saga", logging.WARNING, "x.py", 1, "attempt %s", ("1",), None
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_saga_id_and_step_first() -> None:
    """Engine extras come out as fields, saga_id and step before the rest."""
    line = JsonFormatter().format(_record(attempt=2, step="PREPARE", saga_id="s-1"))
    entry = json.loads(line)
    assert entry["message"] == "attempt 1"
    assert entry["level"] == "warning"
    assert entry["logger"] == "cloudphone.saga"
    assert list(entry)[4:7] == ["saga_id", "step", "attempt"]


def test_console_lines_append_the_extras() -> None:
    """Humans see the same fields as key=value."""
    text = ConsoleFormatter().format(_record(saga_id="s-1", step="COMMIT"))
    assert text == "attempt 1  saga_id=s-1 step=COMMIT"


def test_configure_logging_writes_json_off_a_tty_and_replaces_itself() -> None:
    """A non-TTY stream gets JSON; configuring twice does not duplicate lines."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("info", "auto", stream)
    configure_logging("info", "auto", stream)
    try:
        logging.getLogger("cloudphone.saga").info("step done", extra={"saga_id": "s-2"})
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["saga_id"] == "s-2"
    finally:
        root.setLevel(level)
        for handler in list(root.handlers):
            if handler.get_name() == "cloudphone":
                root.removeHandler(handler)
