"""The engine's aggregates (``SagaEngine.stats``) and the ``ids`` filter of ``list``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cloudphone.saga import SagaEngine, SagaStatus
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.testing import ManualClock
from tests.support.sagas import Recorder, build_saga

pytestmark = pytest.mark.leaves_runs("rows of t_stats, a type no worker registers")

NOW = datetime(2030, 1, 1, 12, 30, 40, tzinfo=UTC)


async def insert_run(
    engine: SagaEngine,
    user: str,
    status: SagaStatus,
    *,
    created: datetime,
    took: timedelta | None = None,
    saga_type: str = "t_stats",
    resolution: str | None = None,
) -> str:
    """A run row as the engine leaves it (finished ``took`` after it was created)."""
    run_id = str(uuid.uuid4())
    row = {
        "id": run_id,
        "saga_type": saga_type,
        "status": status.value,
        "current_step": "A",
        "attempt": 1,
        "data": {},
        "epoch": 1,
        "deadline_noted": False,
        "cancel_requested": False,
        "last_seq": 1,
        "started_by": user,
        "resolution": resolution,
        "created_at": created,
        "updated_at": created,
        "finished_at": created + took if took is not None else None,
    }
    async with engine.db.begin() as conn:
        await conn.execute(sa.insert(saga_runs).values(row))
    return run_id


@pytest.fixture
def engine(make_engine: Callable[..., SagaEngine]) -> SagaEngine:
    """An engine whose clock stands at NOW."""
    return make_engine([], clock=ManualClock(NOW))


async def test_counts_per_type_and_status_within_the_window(
    engine: SagaEngine, unique: str
) -> None:
    """Runs created since ``since`` are counted per type and status; older ones are not."""
    await engine.create_schema()
    user = f"u-{unique}"
    for status in (SagaStatus.COMPLETED, SagaStatus.COMPLETED, SagaStatus.RUNNING):
        await insert_run(engine, user, status, created=NOW - timedelta(minutes=5))
    await insert_run(engine, user, SagaStatus.FAILED, created=NOW, saga_type="t_other")
    await insert_run(engine, user, SagaStatus.COMPLETED, created=NOW - timedelta(days=2))
    await insert_run(engine, f"else-{unique}", SagaStatus.COMPLETED, created=NOW)

    recent = await engine.stats(since=NOW - timedelta(hours=1), started_by=user)
    assert {(c.saga_type, c.status, c.count) for c in recent.counts} == {
        ("t_stats", SagaStatus.COMPLETED, 2),
        ("t_stats", SagaStatus.RUNNING, 1),
        ("t_other", SagaStatus.FAILED, 1),
    }
    assert recent.count(SagaStatus.COMPLETED) == 2
    assert recent.count(SagaStatus.FAILED, "t_stats") == 0
    every = await engine.stats(started_by=user)
    assert every.count(SagaStatus.COMPLETED) == 3


async def test_needs_attention_counts_unresolved_failures_of_any_age(
    engine: SagaEngine, unique: str
) -> None:
    """FAILED runs count until resolved, whatever the window."""
    await engine.create_schema()
    user = f"u-{unique}"
    old = NOW - timedelta(days=30)
    await insert_run(engine, user, SagaStatus.FAILED, created=old, took=timedelta(seconds=1))
    await insert_run(
        engine, user, SagaStatus.FAILED, created=old, took=timedelta(seconds=1), resolution="ok"
    )
    stats = await engine.stats(since=NOW - timedelta(hours=1), started_by=user)
    assert stats.needs_attention == 1
    assert stats.counts == []


async def test_activity_per_minute_over_the_recent_window(engine: SagaEngine, unique: str) -> None:
    """Each minute counts starts, ends and ends other than COMPLETED; empty minutes are zeros."""
    await engine.create_schema()
    user = f"u-{unique}"
    minute = NOW.replace(second=0, microsecond=0)
    await insert_run(
        engine,
        user,
        SagaStatus.COMPLETED,
        created=minute - timedelta(minutes=2, seconds=-5),
        took=timedelta(minutes=1),
    )
    await insert_run(
        engine,
        user,
        SagaStatus.COMPENSATED,
        created=minute - timedelta(minutes=1, seconds=-1),
        took=timedelta(seconds=10),
    )
    await insert_run(engine, user, SagaStatus.RUNNING, created=minute + timedelta(seconds=30))
    await insert_run(engine, user, SagaStatus.COMPLETED, created=minute - timedelta(hours=2))

    stats = await engine.stats(minutes=60, started_by=user)
    assert len(stats.minutes) == 60
    assert stats.minutes[-1].minute == minute
    assert stats.minutes[0].minute == minute - timedelta(minutes=59)
    by_minute = {m.minute: (m.started, m.finished, m.not_completed) for m in stats.minutes}
    assert by_minute[minute - timedelta(minutes=2)] == (1, 0, 0)
    assert by_minute[minute - timedelta(minutes=1)] == (1, 2, 1)
    assert by_minute[minute] == (1, 0, 0)
    assert sum(m.started for m in stats.minutes) == 3
    assert stats.minutes[-2].failure_rate == 0.5
    assert stats.minutes[0].failure_rate is None


async def test_duration_percentiles_per_type_use_the_nearest_rank(
    engine: SagaEngine, unique: str
) -> None:
    """p50 and p95 of 20 finished runs are the 10th and 19th fastest; active runs are left out."""
    await engine.create_schema()
    user = f"u-{unique}"
    start = NOW - timedelta(minutes=30)
    for seconds in range(1, 21):
        await insert_run(
            engine, user, SagaStatus.COMPLETED, created=start, took=timedelta(seconds=seconds)
        )
    await insert_run(
        engine,
        user,
        SagaStatus.FAILED,
        created=start,
        took=timedelta(seconds=7),
        saga_type="t_one",
    )
    await insert_run(engine, user, SagaStatus.RUNNING, created=start - timedelta(hours=5))
    stats = await engine.stats(since=NOW - timedelta(hours=1), started_by=user)
    durations = {d.saga_type: d for d in stats.durations}
    assert durations["t_stats"].count == 20
    assert durations["t_stats"].p50_ms == pytest.approx(10_000, abs=1)
    assert durations["t_stats"].p95_ms == pytest.approx(19_000, abs=1)
    assert durations["t_one"].count == 1
    assert durations["t_one"].p50_ms == pytest.approx(7_000, abs=1)
    assert durations["t_one"].p95_ms == pytest.approx(7_000, abs=1)


async def test_list_by_ids_returns_only_those_runs(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """``ids`` narrows the list to the given runs, combined with the other filters."""
    saga = build_saga(f"ids_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    ids = [await engine.start(saga.name, {"n": i}, started_by=f"u-{unique}") for i in range(3)]
    found = await engine.list(ids=[ids[0], ids[2], "no-such-run"])
    assert {run.id for run in found} == {ids[0], ids[2]}
    assert await engine.list(ids=[ids[1]], started_by="someone-else") == []
    assert await engine.list(ids=[]) == []
