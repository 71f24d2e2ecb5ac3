"""The engine on a ``postgresql+psycopg://`` URL (psycopg 3 under SQLAlchemy)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cloudphone.saga import EventKind, NonRetryableError, Saga, SagaEngine, SagaStatus, StepContext
from tests.support.waiting import eventually


@pytest.fixture
def psycopg_url(postgres_url: str) -> str:
    return (
        make_url(postgres_url)
        .set(drivername="postgresql+psycopg")
        .render_as_string(hide_password=False)
    )


@pytest.fixture
async def engine(psycopg_url: str, unique: str) -> AsyncIterator[SagaEngine]:
    saga = Saga(f"psy_{unique}")
    table = f"psy_rows_{unique}"

    @saga.step("WRITE", transactional=True)
    async def write(ctx: StepContext) -> dict[str, int]:
        await ctx.session.execute(
            sa.text(f"INSERT INTO {table} (saga_id) VALUES (:s)"), {"s": ctx.saga_id}
        )
        return {"written": 1}

    @write.compensate
    async def unwrite(ctx: StepContext) -> None:
        await ctx.session.execute(
            sa.text(f"DELETE FROM {table} WHERE saga_id = :s"), {"s": ctx.saga_id}
        )

    @saga.step("CHECK")
    async def check(ctx: StepContext) -> None:
        if ctx.data.get("fail"):
            raise NonRetryableError("refused")

    built = SagaEngine(
        psycopg_url, [saga], worker_id=f"psy-{unique}", poll_interval=timedelta(seconds=30)
    )
    await built.create_schema()
    async with built.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (saga_id TEXT NOT NULL)"))
    yield built
    await built.close()


async def _rows(engine: SagaEngine, saga_id: str) -> int:
    table = f"psy_rows_{next(iter(engine.sagas)).removeprefix('psy_')}"
    async with engine.db.read() as conn:
        count = await conn.scalar(
            sa.text(f"SELECT count(*) FROM {table} WHERE saga_id = :s"), {"s": saga_id}
        )
    return int(count or 0)


async def test_transactional_steps_and_compensation_on_psycopg(engine: SagaEngine) -> None:
    """Business writes commit with progress; a failure undoes them; history is complete."""
    saga_type = next(iter(engine.sagas))
    async with engine.worker(concurrency=4):
        ok = await engine.wait(await engine.start(saga_type, {}), timeout=timedelta(seconds=10))
        failed = await engine.wait(
            await engine.start(saga_type, {"fail": True}), timeout=timedelta(seconds=10)
        )
    assert ok.status is SagaStatus.COMPLETED
    assert ok.data == {"written": 1}
    assert await _rows(engine, ok.id) == 1
    assert failed.status is SagaStatus.COMPENSATED
    assert await _rows(engine, failed.id) == 0
    kinds = [e.kind for e in await engine.history(ok.id)]
    assert kinds == [
        EventKind.SAGA_STARTED,
        EventKind.STEP_SUCCEEDED,
        EventKind.STEP_SUCCEEDED,
        EventKind.SAGA_COMPLETED,
    ]


async def test_start_in_a_psycopg_transaction_wakes_the_listener(engine: SagaEngine) -> None:
    """start(session=…) commits with the caller; psycopg's LISTEN wakes the idle worker."""
    saga_type = next(iter(engine.sagas))
    async with engine.worker(concurrency=2):
        listener = engine._listener
        assert listener is not None
        await eventually(lambda: _connected(listener), bool, what="LISTEN connection")
        began = time.monotonic()
        async with engine.db.begin() as conn:
            saga_id = await engine.start(saga_type, {}, session=conn)
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert time.monotonic() - began < 5


async def _connected(listener: object) -> bool:
    return bool(getattr(listener, "connected").is_set())  # noqa: B009 - typed as object here


async def test_psycopg_steps_never_share_a_transaction(engine: SagaEngine) -> None:
    """Step groups send their progress through asyncpg: on psycopg every step is alone."""
    assert getattr(engine.store, "step_groups", "missing") is None
