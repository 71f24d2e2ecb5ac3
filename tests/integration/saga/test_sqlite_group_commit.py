"""SQLite's fast path: hot writes on sqlite3 itself, grouped into one write transaction.

Concurrent progress writes and starts share one BEGIN IMMEDIATE … COMMIT, each fenced on its
own; a bad item fails alone; another process holding the file is waited out (or, past the busy
timeout, the database counts as unavailable); the values stored are those SQLAlchemy stores.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import Database, EventKind, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.errors import DatabaseUnavailableError, LeaseLostError, NestedWriteError
from cloudphone.saga.store.base import ClaimRequest
from cloudphone.saga.store.lite import bind_processor
from cloudphone.saga.store.sql import SqlStore
from cloudphone.saga.store.sqlite_engine import create_sqlite_engine
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.testing import ManualClock
from tests.integration.saga.test_store_contract import failed, succeeded
from tests.support.sqlite_lock import write_lock_held
from tests.support.stores import LEASE, Backend, open_backend


@pytest.fixture
async def lite(tmp_path: Path, unique: str) -> AsyncIterator[Backend]:
    """The store contract's SQLite backend (the inline driver, so the fast path)."""
    async with open_backend("sqlite", tmp_path, unique, None) as opened:
        yield opened


def transactions(backend: Backend) -> int:
    assert isinstance(backend.store, SqlStore)
    return backend.store.own_transactions


async def test_concurrent_starts_and_writes_share_one_transaction(lite: Backend) -> None:
    """Twelve progress writes (one fenced off) and four starts: one COMMIT, each as if alone."""
    runs = [await lite.insert(owner="w1", data={"n": i}) for i in range(12)]
    before = transactions(lite)
    writes: list[Any] = []
    for i, run in enumerate(runs):
        epoch = run.epoch + 1 if i == 5 else run.epoch
        writes.append(lite.store.commit(run.id, epoch, succeeded(lite, run, {"x": i}), 1))
    news = [lite.new_run(data={"new": i}) for i in range(4)]
    writes += [lite.store.insert_run(new) for new in news]
    answers = await asyncio.gather(*writes, return_exceptions=True)

    assert transactions(lite) == before + 1
    assert isinstance(answers[5], LeaseLostError)
    assert await lite.read(runs[5].id) == runs[5], "the fenced write changed its run"
    for i, run in enumerate(runs):
        if i != 5:
            after = await lite.read(run.id)
            assert (after.current_step, after.outputs, after.last_seq) == ("B", {"A": {"x": i}}, 2)
    assert answers[12:] == [(new.id, True) for new in news]
    for new in news:
        assert (await lite.read(new.id)).input == new.data


async def test_an_item_that_fails_fails_alone_and_the_others_land_once(
    lite: Backend, tmp_path: Path
) -> None:
    """A write whose event row collides is rolled back; the batch is sent again item by item."""
    runs = [await lite.insert(owner="w1") for _ in range(6)]
    bad = runs[2]
    with sqlite3.connect(tmp_path / "saga.db") as raw:  # an event row where the next one goes
        raw.execute(
            "INSERT INTO saga_events (saga_id, seq, kind, detail, at) VALUES (?, 2, 'x', '{}', ?)",
            (bad.id, "2026-01-01 00:00:00.000000"),
        )
    before = transactions(lite)
    answers = await asyncio.gather(
        *(lite.store.commit(r.id, r.epoch, succeeded(lite, r, {"ok": 1}), 1) for r in runs),
        return_exceptions=True,
    )

    assert isinstance(answers[2], sqlite3.IntegrityError)
    assert await lite.read(bad.id) == bad, "the failed item's UPDATE was not rolled back"
    for run, answer in zip(runs, answers, strict=True):
        if run is not bad:
            assert not isinstance(answer, BaseException), answer
            assert [e.kind for e in await lite.store.history(run.id)] == [
                EventKind.SAGA_STARTED,
                EventKind.STEP_SUCCEEDED,
            ]
    # The group (rolled back), then each item alone: five of them committed.
    assert transactions(lite) == before + 5


async def test_writes_wait_for_another_process_holding_the_file(
    lite: Backend, tmp_path: Path
) -> None:
    """A CLI's lock on the file: the group waits (the loop stays free), then lands."""
    run = await lite.insert(owner="w1")
    async with write_lock_held(tmp_path / "saga.db") as holder:
        write = asyncio.create_task(
            lite.store.commit(run.id, run.epoch, succeeded(lite, run, {"x": 1}), 1)
        )
        start = asyncio.create_task(lite.store.insert_run(lite.new_run()))
        await asyncio.sleep(0.3)  # the loop runs meanwhile: the writes are waiting, not done
        assert not write.done()
        assert not start.done()
        assert (await lite.read(run.id)).last_seq == 1
        await holder.release()
        committed = await asyncio.wait_for(write, 10)
    assert committed.last_seq == 2
    assert (await start)[1] is True


async def test_busy_past_the_timeout_is_the_database_unavailable(
    tmp_path: Path, unique: str
) -> None:
    """Past the busy timeout every item of the group fails as unavailable; a retry lands."""
    clock = ManualClock()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", busy_timeout_ms=200)
    store = SqlStore(db, LEASE, clock)
    await store.create_schema()
    backend = Backend("sqlite", store, clock, db, f"busy_{unique}")
    try:
        run = await backend.insert(owner="w1")
        async with write_lock_held(tmp_path / "busy.db"):
            answers = await asyncio.gather(
                store.commit(run.id, run.epoch, succeeded(backend, run, {"x": 1}), 1),
                store.insert_run(backend.new_run()),
                return_exceptions=True,
            )
        assert all(isinstance(a, DatabaseUnavailableError) for a in answers), answers
        assert (await backend.read(run.id)).last_seq == 1
        again = await store.commit(run.id, run.epoch, succeeded(backend, run, {"x": 1}), 1)
        assert again.last_seq == 2
    finally:
        await store.close()
        await db.dispose()


async def test_a_write_inside_this_tasks_write_transaction_is_refused_at_once(
    lite: Backend,
) -> None:
    """The group would wait for the writer lock this task holds: NestedWriteError instead."""
    run = await lite.insert(owner="w1")
    async with lite.business.begin():
        with pytest.raises(NestedWriteError):
            await lite.store.commit(run.id, run.epoch, succeeded(lite, run), 1)
        with pytest.raises(NestedWriteError):
            await lite.store.insert_run(lite.new_run())
    assert (await lite.read(run.id)).last_seq == 1


async def _write_the_same(store: SqlStore, clock: ManualClock, ids: list[str]) -> list[Any]:
    """Starts, progress (success, failure, a transactional step) and claims on ``store``.

    Returns:
        The claimed runs, each with its previous owner and the run as read afterwards.
    """
    backend = Backend("sqlite", store, clock, store.db, "same_values")
    data = {"n": 1.5, "s": "é\u2603", "nested": {"xs": [1, None, True]}, "none": None}
    for i, run_id in enumerate(ids[:3]):
        run = await backend.insert(id=run_id, owner="w1", data=data, idempotency_key=f"k{i}")
        clock.advance(timedelta(microseconds=123_457))
        if i == 0:
            await store.commit(run.id, run.epoch, succeeded(backend, run, {"deep": data}), 1)
        elif i == 1:
            await store.commit(run.id, run.epoch, failed(backend, run), 1)
        else:
            async with store.step_transaction() as tx:
                await tx.commit(run.id, run.epoch, succeeded(backend, run, None), 1)
    await backend.insert(id=ids[3], owner="w0")  # its lease runs out: taken over below
    await backend.insert(id=ids[4])  # pending: claimed fresh
    clock.advance(LEASE * 2)
    now = clock.now()
    claimed = await store.claim(ClaimRequest("w2", 10, [backend.saga_type], now, exclude=[ids[0]]))
    return [(c.run, c.previous_owner, await backend.read(c.run.id)) for c in claimed]


async def test_the_fast_path_stores_and_reads_what_sqlalchemy_does(tmp_path: Path) -> None:
    """Every column of both tables, byte for byte, and the claimed runs, as SQLAlchemy's."""
    ids = [str(uuid.uuid4()) for _ in range(5)]
    dumps, claims = [], []
    for name, threaded in (("fast", False), ("core", True)):
        url = sa.make_url(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        db = Database(create_sqlite_engine(url, 30_000, threaded=threaded))
        clock = ManualClock()
        store = SqlStore(db, LEASE, clock)
        await store.create_schema()
        try:
            claims.append(await _write_the_same(store, clock, ids))
            assert (store.own_transactions > 0) is not threaded
        finally:
            await store.close()
            await db.engine.dispose()
        with sqlite3.connect(tmp_path / f"{name}.db") as raw:
            dumps.append(
                [
                    raw.execute(f"SELECT *, {typed} FROM {table} ORDER BY 1, 2").fetchall()
                    for table, typed in (
                        ("saga_runs", "typeof(outputs), typeof(error), typeof(next_run_at)"),
                        ("saga_events", "typeof(detail), typeof(at), typeof(step)"),
                    )
                ]
            )
    assert len(dumps[0][0]) == 5
    assert len(dumps[0][1]) > 5
    assert dumps[0] == dumps[1]
    # All but the excluded first: the failed one (released), two expired leases, a pending one.
    assert sorted((run.id, previous) for run, previous, _ in claims[0]) == sorted(
        [(ids[1], None), (ids[2], "w1"), (ids[3], "w0"), (ids[4], None)]
    )
    assert claims[0] == claims[1]
    for run, _previous, read in claims[0]:
        assert run == read


def short_saga(name: str) -> Saga:
    saga = Saga(name)

    @saga.step("A", transactional=True)
    async def a(ctx: StepContext) -> None:
        return None

    @saga.step("B")
    async def b(ctx: StepContext) -> dict[str, Any]:
        return {"b": 1}

    return saga


async def test_lease_renewals_never_see_a_run_move_before_its_runner_does(
    tmp_path: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal between a group's COMMIT and its runners resuming would call leases lost."""
    saga = short_saga(f"renew_{unique}")
    url = f"sqlite+aiosqlite:///{tmp_path / 'renew.db'}"
    engine = SagaEngine(url, [saga], worker_id="w1", lease=timedelta(seconds=1))
    await engine.create_schema()
    caplog.set_level(logging.WARNING, logger="cloudphone")
    try:
        async with engine.worker(concurrency=32):
            ids = [await engine.start(saga.name, {"i": i}) for i in range(600)]
            for run_id in ids:
                run = await engine.wait(run_id, timeout=timedelta(seconds=60))
                assert run.status is SagaStatus.COMPLETED
    finally:
        await engine.close()
    assert not [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]


def test_timestamps_convert_as_utcdatetime_does_and_naive_ones_are_refused(tmp_path: Path) -> None:
    """The fast path's short conversion of UtcDateTime gives SQLAlchemy's text, refuses naive."""
    engine = create_sqlite_engine(sa.make_url(f"sqlite+aiosqlite:///{tmp_path}/t.db"), 1000)
    column = saga_runs.c.updated_at.type
    fast = bind_processor(column, engine.dialect)
    core = column.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert fast is not None
    assert core is not None
    assert fast is not core
    aware = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=timezone(timedelta(hours=-3)))
    assert fast(aware) == core(aware) == "2026-03-04 08:06:07.000089"
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive"):
        fast(datetime(2026, 1, 1))  # naive
