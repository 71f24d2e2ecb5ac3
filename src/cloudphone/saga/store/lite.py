"""SQLite statements of the hot path, built once with bind parameters.

Building a Core statement per call costs more than SQLite takes to run it, so these are
constructed at import and executed with parameters only (one compiled form each, cached).
On the inline driver the engine runs them on sqlite3 itself (see :mod:`.lite_fast`), compiled
once more by :class:`Prepared`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    not_,
    or_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from cloudphone.saga.progress import Progress
from cloudphone.saga.store.rows import progress_values
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.store.types import JSONType, UtcDateTime

_R = saga_runs.c
_OUTPUT_STEP = bindparam("c_output_step", type_=String)
_CARRIED_STEP = bindparam("c_carried_step", type_=String)


def _with_output(outputs: Any, step: Any, value: str) -> Any:
    """``outputs`` with the bound ``value`` set under the bound ``step`` (unless it is NULL)."""
    return case(
        (step.is_(None), outputs),
        else_=func.json_set(
            outputs,
            literal('$."') + step + literal('"'),
            func.json(bindparam(value, type_=JSONType)),
            type_=JSONType,
        ),
    )


_PROGRESS_COLUMNS = (
    "status",
    "current_step",
    "attempt",
    "error",
    "compensation_cause",
    "lease_expires_at",
    "next_run_at",
    "finished_at",
    "deadline_noted",
    "updated_at",
    "retry_since",
)
"""The columns rows.progress_values sets, bound by column name (``c_<column>``)."""

COMMIT = (
    update(saga_runs)
    .where(
        _R.id == bindparam("b_id"),
        _R.epoch == bindparam("b_epoch", type_=Integer),
        or_(
            bindparam("b_seq", type_=Integer).is_(None),
            _R.last_seq == bindparam("b_seq", type_=Integer),
        ),
    )
    .values(
        **{name: bindparam(f"c_{name}", type_=_R[name].type) for name in _PROGRESS_COLUMNS},
        # Only the steps this progress records go over the wire, merged in by SQLite (a NULL
        # output, bound as SQL NULL, sets JSON null: the step returned nothing): the carried
        # plain step's first, then the step's own.
        outputs=_with_output(
            _with_output(_R.outputs, _CARRIED_STEP, "c_carried"), _OUTPUT_STEP, "c_output"
        ),
        owner=case((bindparam("b_keep", type_=Boolean), _R.owner), else_=None),
        cancel_requested=and_(_R.cancel_requested, not_(bindparam("b_clear", type_=Boolean))),
        last_seq=_R.last_seq + bindparam("b_n", type_=Integer),
    )
    .returning(_R.last_seq, _R.cancel_requested)
)
"""Apply a Progress if the epoch (and, unless NULL, last_seq) is current; returns the new
last_seq and cancel_requested."""

INSERT_RUN = (
    sqlite_insert(saga_runs)
    .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in saga_runs.c})
    .on_conflict_do_nothing(index_elements=["saga_type", "idempotency_key"])
    .returning(_R.id)
)
"""Insert a run unless its (saga_type, idempotency_key) exists."""


def commit_params(
    run_id: str, epoch: int, progress: Progress, lease_until: datetime, seq: int | None = None
) -> dict[str, Any]:
    """Parameters of COMMIT."""
    columns = progress_values(progress, lease_until)
    return {
        **{f"c_{name}": value for name, value in columns.items()},
        "c_output_step": progress.output_step,
        "c_output": progress.output,
        "c_carried_step": progress.carried_step,
        "c_carried": progress.carried_output,
        "b_id": run_id,
        "b_epoch": epoch,
        "b_seq": seq,
        "b_keep": progress.keep_lease,
        "b_clear": progress.clear_cancel,
        "b_n": len(progress.events),
    }


def insert_params(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters of INSERT_RUN from the new run's column values."""
    return {f"v_{name}": value for name, value in values.items()}


class Prepared:
    """A Core statement compiled once for a dialect, with its parameters' order and converters.

    Args:
        statement: The statement (named bind parameters; literals keep their values).
        dialect: The engine's dialect, whose bind processors convert the values.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        assert compiled.positiontup is not None, "SQLite binds by position"
        self.sql = compiled.string
        self._slots: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind_processor(bind.type, dialect)
            self._slots.append((name, bind.required, bind.effective_value, process))

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters for ``values`` (by bind name), converted for sqlite3."""
        out = []
        for name, required, fixed, process in self._slots:
            value = values[name] if required else fixed
            out.append(value if process is None else process(value))
        return tuple(out)


_SAMPLES = (
    datetime(2026, 12, 1, 15, 19, 8, 503597, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(999, 5, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))),
)


def bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's bind processor on ``dialect``, as SQLAlchemy applies it.

    For :class:`.UtcDateTime` a shorter function of the same result: the processor chain (the
    decorator, then SQLite's DATETIME formatting by a dict) took 4.4 us a value, a quarter of
    the time a progress write spends in Python. It is used only once it gives, on sample
    values, exactly what SQLAlchemy's gives.
    """
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    if not isinstance(type_, UtcDateTime) or process is None:
        return process
    return _utc_text if all(process(at) == _utc_text(at) for at in _SAMPLES) else process


def _utc_text(value: datetime | None) -> str | None:
    """An aware datetime as SQLite's naive UTC text (UtcDateTime's bind processing)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
