"""Rows of the memory store: stored as JSON columns would be, read back as fresh copies."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Collection
from typing import Any

from cloudphone.saga.records import SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.base import RunFilter
from cloudphone.saga.store.rows import run_from_row

Row = dict[str, Any]
"""A ``saga_runs`` or ``saga_events`` row: column name to value, as SQL would hold it."""

_JSON_COLUMNS = frozenset({"data", "outputs", "error", "detail", "trace_context"})


def stored(value: Any) -> Any:
    """``value`` (a row, or a list of rows) with its JSON columns as a database returns them.

    A fresh copy, so the caller keeps no reference into the store, and refused if not JSON
    (tuples become lists, as they would). Datetimes are columns of their own, kept as they are.
    """
    if isinstance(value, dict):
        return {k: _column(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(item) for item in value]
    return value


def _column(name: str, value: Any) -> Any:
    return json_copy(value) if name in _JSON_COLUMNS else value


def json_copy(value: Any) -> Any:
    """A fresh copy of a JSON value, as a database would return it (None stays None)."""
    return json.loads(json.dumps(value, allow_nan=False)) if value is not None else None


def run_of(row: Row) -> SagaRun:
    """The SagaRun of a row, sharing nothing with it."""
    return run_from_row(copy.deepcopy(row))


def row_filter(where: RunFilter, orphans: Collection[str] | None = None) -> Callable[[Row], bool]:
    """``where`` as one predicate on a row (``orphans``: the ids ``where.orphaned`` keeps)."""
    equal = {
        "status": where.status.value if where.status is not None else None,
        "saga_type": where.saga_type,
        "started_by": where.started_by,
        "forked_from": where.forked_from,
    }
    wanted = {column: value for column, value in equal.items() if value is not None}
    after, before = where.created_after, where.created_before

    def check(row: Row) -> bool:
        if where.ids is not None and row["id"] not in where.ids:
            return False
        if orphans is not None and row["id"] not in orphans:
            return False
        if any(row[column] != value for column, value in wanted.items()):
            return False
        if after is not None and row["created_at"] < after:
            return False
        if before is not None and row["created_at"] >= before:
            return False
        return not where.needs_attention or (
            row["status"] == SagaStatus.FAILED.value and row["resolution"] is None
        )

    return check
