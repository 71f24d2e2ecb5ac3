"""Claims on SQLite's fast path: :func:`.claims.claim_txn`'s steps on sqlite3 itself.

The same two steps (select the due runs, then lease each one, recording takeovers), run as an
item of the fast path's group transaction. The lease UPDATE is a Core statement compiled once
(see :class:`.lite.Prepared`) and its rows are read back through the column types' own
result processors, so a claimed run equals the one SQLAlchemy would have read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.engine import Dialect

from cloudphone.saga.records import SagaRun
from cloudphone.saga.state import ACTIVE
from cloudphone.saga.store.base import ClaimRequest, split_types
from cloudphone.saga.store.claims import LEASE_ONE, lease_params, takeover_rows
from cloudphone.saga.store.lite import Prepared, bind_processor
from cloudphone.saga.store.rows import run_from_row
from cloudphone.saga.store.tables import saga_runs

_R = saga_runs.c

_ACTIVE = [s.value for s in ACTIVE]


@lru_cache(maxsize=64)
def due_sql(names: int, pairs: int, excluded: int, own: bool) -> str:
    """The SELECT of due runs for that many bare names, (name, version) pairs and exclusions."""
    covered = []
    if names:
        covered.append(f"saga_type IN ({', '.join('?' * names)})")
    covered += ["(saga_type = ? AND saga_version = ?)"] * pairs
    free = "owner IS NULL OR lease_expires_at < ?" + (" OR owner = ?" if own else "")
    not_excluded = f" AND id NOT IN ({', '.join('?' * excluded)})" if excluded else ""
    return (
        f"SELECT id, owner FROM saga_runs WHERE status IN ({', '.join('?' * len(_ACTIVE))}) "
        f"AND ({' OR '.join(covered)}) AND next_run_at <= ? AND ({free}){not_excluded} "
        "ORDER BY next_run_at LIMIT ?"
    )


class Claims:
    """Claims for one dialect: its converters, and the lease UPDATE compiled for it."""

    def __init__(self, dialect: Dialect) -> None:
        self.lease_one = Prepared(LEASE_ONE, dialect)
        self._time = bind_processor(_R.next_run_at.type, dialect)
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (c.name, c.type.dialect_impl(dialect).result_processor(dialect, None))
            for c in saga_runs.c
        ]

    def claim(
        self,
        sq: sqlite3.Connection,
        events: Callable[[sqlite3.Connection, list[dict[str, Any]]], None],
        until: datetime,
        request: ClaimRequest,
    ) -> list[tuple[SagaRun, str | None]]:
        """Lease up to ``request.limit`` due runs in ``sq``'s transaction (``SqlStore.claim``)."""
        names, pairs = split_types(request.saga_types)
        if not names and not pairs:
            return []
        worker_id, now, own, exclude = request.worker_id, request.now, request.own, request.exclude
        before, time = request.before, self._time
        args: list[Any] = [*_ACTIVE, *names, *(v for pair in pairs for v in pair)]
        args += [time(now) if time else now, time(before) if time else before]
        args += [own] if own is not None else []
        args += [*exclude, request.limit]
        due = sq.execute(due_sql(len(names), len(pairs), len(exclude), own is not None), args)
        claimed = []
        lease = self.lease_one
        for run_id, previous in due.fetchall():
            params = lease_params(run_id, worker_id, until, now, previous)
            (row,) = sq.execute(lease.sql, lease.args(params)).fetchall()
            run = run_from_row(self._mapping(row))
            if previous is not None:
                events(sq, takeover_rows(run, previous, worker_id, now))
            claimed.append((run, previous))
        return claimed

    def _mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: value if process is None else process(value)
            for (name, process), value in zip(self._columns, row, strict=True)
        }
