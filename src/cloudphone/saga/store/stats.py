"""Grouped reads of ``saga_runs`` behind :meth:`SagaEngine.stats`.

Each query reads one index range: counts and per-minute starts walk ``ix_saga_runs_created``
(``created_at, saga_type, status``), per-minute ends and durations walk the partial
``ix_saga_runs_finished`` (``finished_at, saga_type, status, created_at``), and the attention
count walks ``ix_saga_runs_status_created``. Both time indexes cover their queries, so they
are answered from the index alone. Durations cover the recent per-minute window (the last
hour by default), so their sort stays small however long the history. Minutes and durations
are computed by the database (one expression per dialect); percentiles use window functions,
which both dialects have.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.state import SagaStatus
from cloudphone.saga.stats import MinuteActivity, SagaStats, StatusCount, TypeDurations
from cloudphone.saga.store.tables import saga_runs

_R = saga_runs.c


async def read_stats_txn(
    conn: AsyncConnection,
    *,
    since: datetime | None,
    minutes: int,
    now: datetime,
    started_by: str | None,
) -> SagaStats:
    """The aggregates of :class:`SagaStats`, read on ``conn``."""
    owner = [_R.started_by == started_by] if started_by is not None else []
    postgres = conn.dialect.name == "postgresql"
    first_minute = _floor_minute(now) - timedelta(minutes=minutes - 1)
    return SagaStats(
        since=since,
        counts=await _counts(conn, since, owner),
        needs_attention=await _needs_attention(conn, owner),
        minutes=await _minutes(conn, first_minute, minutes, owner, postgres),
        durations=await _durations(conn, first_minute, owner, postgres),
    )


async def _counts(
    conn: AsyncConnection, since: datetime | None, owner: list[Any]
) -> list[StatusCount]:
    where = [*owner, *([_R.created_at >= since] if since is not None else [])]
    postgres = conn.dialect.name == "postgresql"
    saga_type, status = _unindexed(_R.saga_type, postgres), _unindexed(_R.status, postgres)
    stmt = select(saga_type, status, func.count()).where(*where).group_by(saga_type, status)
    rows = sorted((await conn.execute(stmt)).all())
    return [StatusCount(t, SagaStatus(s), int(n)) for t, s, n in rows]


async def _needs_attention(conn: AsyncConnection, owner: list[Any]) -> int:
    stmt = select(func.count()).where(
        _R.status == SagaStatus.FAILED.value, _R.resolution.is_(None), *owner
    )
    return int(await conn.scalar(stmt) or 0)


async def _minutes(
    conn: AsyncConnection, first: datetime, count: int, owner: list[Any], postgres: bool
) -> list[MinuteActivity]:
    started_minute = _minute_of(_R.created_at, postgres)
    started = select(started_minute, func.count()).where(_R.created_at >= first, *owner)
    ended_minute = _minute_of(_R.finished_at, postgres)
    not_completed = func.sum(case((_R.status != SagaStatus.COMPLETED.value, 1), else_=0))
    ended = select(ended_minute, func.count(), not_completed).where(_R.finished_at >= first, *owner)
    starts = {
        _minute_value(m): int(n)
        for m, n in (await conn.execute(started.group_by(started_minute))).all()
    }
    ends = {
        _minute_value(m): (int(n), int(bad or 0))
        for m, n, bad in (await conn.execute(ended.group_by(ended_minute))).all()
    }
    activity = []
    for i in range(count):
        minute = first + timedelta(minutes=i)
        finished, bad = ends.get(minute, (0, 0))
        activity.append(MinuteActivity(minute, starts.get(minute, 0), finished, bad))
    return activity


async def _durations(
    conn: AsyncConnection, since: datetime, owner: list[Any], postgres: bool
) -> list[TypeDurations]:
    duration = _duration_ms(postgres).label("ms")
    where = [_R.finished_at.is_not(None), _R.finished_at >= since, *owner]
    saga_type = _unindexed(_R.saga_type, postgres)
    ranked = (
        select(
            saga_type.label("saga_type"),
            duration,
            func.row_number().over(partition_by=saga_type, order_by=duration).label("rank"),
            func.count().over(partition_by=saga_type).label("n"),
        )
        .where(*where)
        .subquery()
    )
    # Nearest rank: the ceil(p * n)-th value, in integer arithmetic (no ceil() on SQLite).
    p50 = (ranked.c.n * 50 + 99) // 100
    p95 = (ranked.c.n * 95 + 99) // 100
    stmt = (
        select(ranked.c.saga_type, ranked.c.n, ranked.c.rank, ranked.c.ms)
        .where((ranked.c.rank == p50) | (ranked.c.rank == p95))
        .order_by(ranked.c.saga_type, ranked.c.rank)
    )
    found: dict[str, dict[str, Any]] = {}
    for saga_type, n, rank, ms in (await conn.execute(stmt)).all():
        entry = found.setdefault(saga_type, {"n": int(n)})
        if rank == (n * 50 + 99) // 100:
            entry["p50"] = float(ms)
        if rank == (n * 95 + 99) // 100:
            entry["p95"] = float(ms)
    return [TypeDurations(t, e["n"], e["p50"], e["p95"]) for t, e in found.items()]


def _unindexed(column: Any, postgres: bool) -> ColumnElement[Any]:
    """``column``, hidden from SQLite's index choice when grouping or partitioning by it.

    Left alone, SQLite walks a ``(saga_type, …)`` index to get the grouping order for free
    and then visits every row; the unary ``+`` (SQLite's documented way to disqualify a term)
    makes it use the covering time-range index instead, which reads only the window.
    """
    if postgres:
        return column  # type: ignore[no-any-return]
    return literal_column(f"+{column.table.name}.{column.name}", type_=column.type)


def _minute_of(column: Any, postgres: bool) -> ColumnElement[Any]:
    if postgres:
        return func.date_trunc("minute", func.timezone("UTC", column))
    # SQLite keeps naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; the minute is its prefix.
    return func.substr(column, 1, 16)


def _minute_value(raw: Any) -> datetime:
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)
    return datetime.strptime(str(raw), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def _duration_ms(postgres: bool) -> ColumnElement[Any]:
    if postgres:
        return func.extract("epoch", _R.finished_at - _R.created_at) * 1000
    return (func.julianday(_R.finished_at) - func.julianday(_R.created_at)) * literal_column(
        "86400000.0"
    )


def _floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)
