"""Engine writes from inside a transactional step: join its transaction, or be told at once.

On SQLite the step holds the single writer lock until it commits, so a write of its own (a
start without ``session=``, an operator action) or a wait for a run to move would wait for
the step forever: NestedWriteError says so at once, and the step is not retried. PostgreSQL
runs them in transactions of their own. The in-memory engine given a SQLite business
database refuses like SQLite, so a saga tested on the kit behaves as on the embedded default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import (
    Database,
    NestedWriteError,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.testing import MemoryEngine
from tests.support.sagas import Recorder, build_saga


def parent_saga(engine_of: Callable[[], SagaEngine], *, join: bool) -> Saga:
    """PARENT's transactional step starts a ``child`` run, in its transaction if ``join``."""
    saga = Saga("parent")

    @saga.step("START_CHILD", transactional=True)
    async def start_child(ctx: StepContext) -> dict[str, Any]:
        session = ctx.session if join else None
        child = await engine_of().start("child", {}, session=session, idempotency_key=ctx.saga_id)
        return {"child": child}

    @start_child.compensate
    async def undo(ctx: StepContext) -> None:
        return None

    return saga


async def run_parent(engine: SagaEngine) -> tuple[Any, Any]:
    """Start the parent, wait for it and (if it started one) its child."""
    async with engine.worker():
        parent = await engine.wait(await engine.start("parent", {}), timeout=timedelta(seconds=10))
        child_id = parent.data.get("child")
        child = await engine.wait(child_id, timeout=timedelta(seconds=10)) if child_id else None
    return parent, child


@pytest.mark.parametrize("join", [False, True], ids=["own_transaction", "session"])
async def test_start_inside_a_transactional_step(
    make_engine: Callable[..., SagaEngine], join: bool
) -> None:
    """SQLite: only session=ctx.session works (else a clear error, no retry); PostgreSQL: both."""
    engines: list[SagaEngine] = []
    engine = make_engine(
        [parent_saga(lambda: engines[0], join=join), build_saga("child", Recorder())]
    )
    engines.append(engine)
    await engine.create_schema()
    parent, child = await run_parent(engine)
    if join or engine.db.is_postgres:
        assert parent.status is SagaStatus.COMPLETED
        assert child is not None
        assert child.status is SagaStatus.COMPLETED
        return
    assert parent.status is SagaStatus.COMPENSATED
    assert parent.error is not None
    assert parent.error.type == "NestedWriteError"
    assert "pass session=ctx.session" in parent.error.message
    assert parent.attempt == 1  # retrying cannot help: not retried
    async with engine.db.read() as conn:
        runs = await conn.scalar(
            sa.text("SELECT count(*) FROM saga_runs WHERE saga_type = 'child'")
        )
    assert runs == 0


async def test_operator_actions_and_waits_inside_a_transactional_step(
    make_engine: Callable[..., SagaEngine],
) -> None:
    """SQLite refuses a cancel, and a wait for a run that cannot move; a finished run is read."""
    release = asyncio.Event()
    idle = Saga("idle")

    @idle.step("HOLD")
    async def hold(ctx: StepContext) -> None:
        await release.wait()

    @hold.compensate
    async def unhold(ctx: StepContext) -> None:
        return None

    seen: dict[str, str] = {}
    ids: dict[str, str] = {}
    engines: list[SagaEngine] = []
    meddler = Saga("meddler")

    @meddler.step("MEDDLE", transactional=True)
    async def meddle(ctx: StepContext) -> None:
        engine = engines[0]
        seen["finished"] = (
            await engine.wait(ids["done"], timeout=timedelta(seconds=5))
        ).status.value
        actions = [("cancel", lambda: engine.cancel(ids["idle"]))]
        if not engine.db.is_postgres:  # there it would wait for the idle run: it can move
            actions.append(("wait", lambda: engine.wait(ids["idle"], timeout=timedelta(seconds=5))))
        for name, action in actions:
            try:
                await action()
                seen[name] = "ok"
            except NestedWriteError as error:
                seen[name] = str(error)

    engine = make_engine([idle, meddler, build_saga("done", Recorder())])
    engines.append(engine)
    await engine.create_schema()
    async with engine.worker():
        ids["done"] = await engine.start("done", {})
        await engine.wait(ids["done"], timeout=timedelta(seconds=10))
        ids["idle"] = await engine.start("idle", {})
        meddled = await engine.wait(
            await engine.start("meddler", {}), timeout=timedelta(seconds=10)
        )
        release.set()
        await engine.wait(ids["idle"], timeout=timedelta(seconds=10))
    assert meddled.status is SagaStatus.COMPLETED
    assert seen["finished"] == "COMPLETED"
    if engine.db.is_postgres:
        assert seen["cancel"] == "ok"
        return
    assert seen["wait"].startswith(f"wait() for saga {ids['idle']} inside a write transaction")
    assert "an operator action inside a write transaction" in seen["cancel"]


@pytest.fixture
async def business(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'business.db'}")
    yield db
    await db.dispose()


@pytest.mark.parametrize("join", [False, True], ids=["own_transaction", "session"])
async def test_the_memory_engine_refuses_like_sqlite(business: Database, join: bool) -> None:
    """The kit's transactional steps run in a SQLite transaction: the same rule applies."""
    engines: list[SagaEngine] = []
    engine = MemoryEngine(
        [parent_saga(lambda: engines[0], join=join), build_saga("child", Recorder())],
        database=business,
    )
    engines.append(engine)
    async with engine.worker():
        parent_id = await engine.start("parent", {})
        await engine.settle()
        parent = await engine.get(parent_id)
        child_id = parent.data.get("child")
        await engine.settle()
        child = await engine.get(child_id) if child_id else None
    if join:
        assert parent.status is SagaStatus.COMPLETED
        assert child is not None
        assert child.status is SagaStatus.COMPLETED
        return
    assert parent.status is SagaStatus.COMPENSATED
    assert parent.error is not None
    assert parent.error.type == "NestedWriteError"
    assert await engine.list(saga_type="child") == []


async def test_a_nested_write_transaction_is_refused_at_once(business: Database) -> None:
    """Same task (or a task it awaits) on the same file: refused; otherwise writers queue."""
    other = Database(business.url)  # another handle on the same file: SQLite's lock is shared
    later: list[asyncio.Task[None]] = []
    closed = asyncio.Event()

    async def write(db: Database, value: int) -> None:
        async with db.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (x) VALUES (:x)"), {"x": value})

    async def write_once_closed() -> None:
        await closed.wait()
        await write(business, 2)

    async with business.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    waiting = asyncio.create_task(write(business, 1))  # started outside: waits its turn
    try:
        async with business.begin() as conn:
            assert business.writing()
            assert other.writing()
            await conn.execute(sa.text("INSERT INTO t (x) VALUES (0)"))
            for db in (business, other):
                with pytest.raises(NestedWriteError, match="already holds the write transaction"):
                    await write(db, 99)
                with pytest.raises(NestedWriteError):
                    await asyncio.gather(write(db, 99))  # a task awaited from inside
            # A task started inside that writes once the transaction is over is not refused.
            later.append(asyncio.create_task(write_once_closed()))
        assert not business.writing()
        closed.set()
        await asyncio.gather(waiting, *later)
        async with business.read() as conn:
            rows = (await conn.scalars(sa.text("SELECT x FROM t ORDER BY x"))).all()
    finally:
        await other.dispose()
    assert rows == [0, 1, 2]
