"""A refused value never reaches the history or the logs; when queued writes go direct.

PostgreSQL's data exceptions (SQLSTATE class 22) quote the value in their message's first
line, and asyncpg quotes an argument it cannot encode: the recorded failure says what kind
of refusal it was and nothing of the value. ``pg_write.driver_sql`` decides which writes go
straight to asyncpg: in a step group a statement object only from its second use (one built
per call goes through SQLAlchemy, which compiles it once per shape), and never on a
connection that translates schema names (the write would land in another schema).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import RetryPolicy, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.store.pg_write import driver_sql

WAIT = timedelta(seconds=20)
SECRET = "s3cr3t-4111111111111111"


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("column", "value", "refused"),
    [
        ("u uuid", "CAST(CAST(:v AS text) AS uuid)", "SQLSTATE 22P02"),  # parsed by the server
        ("n integer", ":v", "could not encode a value"),  # refused by asyncpg before sending
    ],
    ids=["server-22P02", "asyncpg-encode"],
)
async def test_a_refused_value_is_not_quoted_in_the_history_or_the_logs(
    postgres_url: str,
    unique: str,
    column: str,
    value: str,
    refused: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, name = f"queued_values_{unique}", column.split()[0]
    saga = Saga(f"queued_values_{unique}", retry=RetryPolicy(max_attempts=1))
    insert = sa.text(f"INSERT INTO {table} ({name}) VALUES ({value})")

    @saga.step("WRITE", transactional=True)
    async def write(ctx: StepContext) -> None:
        ctx.write(insert, {"v": SECRET})

    engine = SagaEngine(postgres_url, [saga], worker_id=f"w-{unique}", lease=WAIT)
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} ({column})"))
    try:
        caplog.set_level(logging.DEBUG)
        async with engine.worker():
            run_id = await engine.start(saga.name, {})
            run = await engine.wait(run_id, timeout=WAIT)
        assert run.status is SagaStatus.COMPENSATED  # one attempt, nothing to undo
        assert run.error is not None
        assert refused in run.error.message, run.error
        assert run.error.type in {"DataError", "DBAPIError"}, run.error  # SQLAlchemy's
        events = await engine.history(run_id)
        assert [e for e in events if e.kind.value == "step_failed"], events
        recorded = repr([(e.kind, e.detail) for e in events]) + repr(run.error) + caplog.text
        assert SECRET not in recorded
        assert "s3cr3t" not in recorded
    finally:
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        await engine.close()


@pytest.mark.postgres
async def test_in_a_group_a_statement_goes_direct_from_its_second_use_and_never_translated(
    postgres_url: str, unique: str
) -> None:
    table = sa.Table(f"queued_direct_{unique}", sa.MetaData(), sa.Column("n", sa.Integer))
    kept = sa.insert(table)
    engine = SagaEngine(postgres_url, [], worker_id=f"w-{unique}")

    def built() -> QueuedWrite:
        return QueuedWrite(sa.insert(table).values(n=1), None)

    try:
        await check_direct(engine, kept, built, unique)
    finally:
        await engine.close()


async def check_direct(
    engine: SagaEngine, kept: Any, built: Callable[[], QueuedWrite], unique: str
) -> None:
    async with engine.db.begin() as conn:
        first = QueuedWrite(kept, {"n": 1})
        assert driver_sql(first, conn, compile_new=False) is None, "seen once: not compiled"
        again: Any = driver_sql(QueuedWrite(kept, {"n": 2}), conn, compile_new=False)
        assert again is not None
        assert (again[0].split()[:2], again[1]) == (["INSERT", "INTO"], [2])
        assert [driver_sql(built(), conn, compile_new=False) for _ in range(3)] == [None] * 3
        assert driver_sql(built(), conn) is not None, "the one statement with progress compiles"
        await conn.execution_options(schema_translate_map={None: f"tenant_{unique}"})
        assert driver_sql(QueuedWrite(kept, {"n": 3}), conn) is None


async def test_a_failing_statement_on_ctx_session_names_none_of_its_values(
    make_engine: Callable[..., SagaEngine], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The body's own statement fails: recorded and logged without its parameters.

    A unique violation; the error shows the statement, and the engine hides what it was given.
    """
    table = f"session_values_{unique}"
    saga = Saga(f"session_values_{unique}", retry=RetryPolicy(max_attempts=1))
    insert = sa.text(f"INSERT INTO {table} (k, note) VALUES (:k, :note)")

    @saga.step("WRITE", transactional=True)
    async def write(ctx: StepContext) -> None:
        await ctx.session.execute(insert, {"k": 1, "note": SECRET})

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (k integer UNIQUE, note text)"))
        await conn.execute(sa.text(f"INSERT INTO {table} (k, note) VALUES (1, 'first')"))
    caplog.set_level(logging.DEBUG)
    async with engine.worker():
        run_id = await engine.start(saga.name, {})
        run = await engine.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.type == "IntegrityError", run.error
    assert "parameters hidden" in run.error.message, run.error.message
    events = await engine.history(run_id)
    recorded = repr([(e.kind, e.detail) for e in events]) + repr(run.error) + caplog.text
    assert "s3cr3t" not in recorded
