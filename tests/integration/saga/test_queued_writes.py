"""``ctx.write``: a transactional step's queued writes commit with its progress, exactly once.

On SQLite and PostgreSQL: the writes run in order after the body (and after its
``ctx.session`` statements), a failing one fails the attempt with nothing half-written and
without its SQL or values in the history. On PostgreSQL (asyncpg) a lone step's one write is
sent with its progress in one statement: no BEGIN, no COMMIT, one round trip.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from cloudphone.saga import EventKind, RetryPolicy, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.context import WriteQueue
from cloudphone.saga.store import step_group
from cloudphone.saga.store.sql import SqlStore
from tests.support.waiting import eventually

WAIT = timedelta(seconds=20)
SECRET = "s3cr3t-4111111111111111"


@dataclass
class Plan:
    """What the steps do; each trick fires once."""

    table: str
    t1_writes: int = 1
    t1_session_first: bool = False
    t1_conflict_until: int = 0
    """Attempts of T1 (up to this one) that insert a row whose id exists."""
    t1_kill_once: bool = False
    t1_bodies: int = 0
    seen: list[Any] = field(default_factory=list)


def four_steps(name: str, plan: Plan) -> Saga:
    """T1 (queues writes) → S2 (plain) → T3 (queues one write) → S4 (plain)."""
    saga = Saga(name, retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(0)))
    insert = sa.text(f"INSERT INTO {plan.table} (run_id, step, note) VALUES (:r, :s, :n)")
    taken = sa.text(
        f"INSERT INTO {plan.table} (id, run_id, step, note) VALUES (1000000, :r, :s, :n)"
    )

    @saga.step("T1", transactional=True)
    async def t1(ctx: StepContext) -> dict[str, Any]:
        plan.t1_bodies += 1
        if plan.t1_session_first:
            await ctx.session.execute(insert, {"r": ctx.saga_id, "s": "T1", "n": "s"})
        if plan.t1_kill_once:
            plan.t1_kill_once = False
            ctx.write(
                sa.text(
                    f"INSERT INTO {plan.table} (run_id, step) "
                    # The interrupt strikes at the next row: within the statement.
                    "SELECT :r, 'kill' FROM generate_series(1, 3) "
                    "WHERE pg_terminate_backend(pg_backend_pid())"
                ),
                {"r": ctx.saga_id},
            )
            return {"t1": ctx.attempt}
        statement = taken if ctx.attempt <= plan.t1_conflict_until else insert
        for i in range(plan.t1_writes):
            ctx.write(statement, {"r": ctx.saga_id, "s": "T1", "n": f"{i}:{SECRET}"})
        return {"t1": ctx.attempt}

    @saga.step("S2")
    async def s2(ctx: StepContext) -> dict[str, Any]:
        return {"s2": "called"}

    @saga.step("T3", transactional=True)
    async def t3(ctx: StepContext) -> dict[str, Any]:
        plan.seen.append(ctx.data.get("s2"))
        ctx.write(sa.insert(table_of(plan.table)).values(run_id=ctx.saga_id, step="T3", note="t"))
        return {"t3": 3}

    @saga.step("S4")
    async def s4(ctx: StepContext) -> None:
        return None

    return saga


def table_of(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text),
        sa.Column("step", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("doc", sa.JSON),
    )


class QueryLog:
    """Every statement asyncpg sent on the engine's SQLAlchemy connections (PostgreSQL).

    asyncpg logs what it sends by text (BEGIN, COMMIT, our statements), not the prepared
    statements SQLAlchemy executes; enough to tell whether a statement went inside an
    explicit transaction on its connection.
    """

    def __init__(self) -> None:
        self.queries: list[tuple[int, str]] = []

    def attach(self, engine: SagaEngine) -> None:
        def connected(dbapi_conn: Any, _record: Any) -> None:
            driver = dbapi_conn.driver_connection
            driver.add_query_logger(lambda logged: self.queries.append((id(driver), logged.query)))

        event.listen(engine.db.engine.sync_engine, "connect", connected)

    def matching(self, *parts: str) -> list[str]:
        return [q for _conn, q in self.queries if all(p in q for p in parts)]

    def in_transaction(self, *parts: str) -> list[bool]:
        """For each statement with ``parts``: whether its connection had sent BEGIN before it."""
        open_on: dict[int, bool] = {}
        found = []
        for conn, query in self.queries:
            word = query.strip().upper()
            if word.startswith("BEGIN"):
                open_on[conn] = True
            elif word.startswith(("COMMIT", "ROLLBACK")):
                open_on[conn] = False
            elif all(p in query for p in parts):
                found.append(open_on.get(conn, False))
        return found


@pytest.fixture
def plan(unique: str) -> Plan:
    return Plan(table=f"queued_rows_{unique}")


@pytest.fixture
def log() -> QueryLog:
    return QueryLog()


async def staged(
    make: Callable[..., SagaEngine], plan: Plan, unique: str, log: QueryLog
) -> tuple[SagaEngine, Saga]:
    saga = four_steps(f"queued_{unique}", plan)
    engine = make([saga])
    if engine.db.is_postgres:
        log.attach(engine)
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.run_sync(table_of(plan.table).metadata.create_all)
    return engine, saga


@asynccontextmanager
async def on_postgres(
    url: str,
    saga: Saga,
    plan: Plan,
    log: QueryLog,
    unique: str,
    *others: Saga,
    insert_with_first_step: bool = True,
) -> AsyncIterator[SagaEngine]:
    """An engine of its own on PostgreSQL (steps logged), with the plan's table."""
    engine = SagaEngine(
        url,
        [saga, *others],
        worker_id=f"w-{unique}",
        lease=WAIT,
        insert_with_first_step=insert_with_first_step,
    )
    try:
        log.attach(engine)
        await engine.create_schema()
        async with engine.db.begin() as conn:
            await conn.run_sync(table_of(plan.table).metadata.create_all)
        yield engine
    finally:
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {plan.table}"))
        await engine.close()


async def rows(engine: SagaEngine, plan: Plan) -> list[tuple[Any, ...]]:
    async with engine.db.read() as conn:
        result = await conn.execute(
            sa.text(f"SELECT run_id, step, note FROM {plan.table} ORDER BY id")
        )
        return [tuple(r) for r in result]


async def run_once(engine: SagaEngine, saga: Saga) -> tuple[str, Any]:
    async with engine.worker():
        run_id = await engine.start(saga.name, {})
        return run_id, await engine.wait(run_id, timeout=WAIT)


def steps_of(events: list[Any], step: str) -> list[tuple[EventKind, int | None]]:
    return [(e.kind, e.attempt) for e in events if e.step == step]


def failed_quietly_once(events: list[Any], step: str) -> None:
    """Attempt 1 of ``step`` failed on a write taking id 1000000, attempt 2 succeeded.

    The failure is recorded as the database's error, without the statement or its values.
    """
    assert steps_of(events, step) == [
        (EventKind.STEP_FAILED, 1),
        (EventKind.RETRY_SCHEDULED, 2),
        (EventKind.STEP_SUCCEEDED, 2),
    ]
    (failed,) = [e for e in events if e.kind is EventKind.STEP_FAILED]
    assert failed.detail["error"]["type"] == "IntegrityError", failed.detail
    message = str(failed.detail)
    assert "unique" in message.lower(), message
    for leaked in (SECRET, "INSERT", "VALUES", "DETAIL", "1000000"):
        assert leaked not in message, message


@pytest.mark.parametrize("session_first", [False, True])
async def test_queued_writes_commit_with_their_step_in_order(
    make_engine: Callable[..., SagaEngine],
    unique: str,
    plan: Plan,
    log: QueryLog,
    session_first: bool,
) -> None:
    """Two queued writes after a ctx.session one, in order; T3's carries S2's success."""
    plan.t1_writes, plan.t1_session_first = 2, session_first
    engine, saga = await staged(make_engine, plan, unique, log)
    run_id, run = await run_once(engine, saga)

    assert run.status is SagaStatus.COMPLETED
    assert plan.seen == ["called"]
    first = [(run_id, "T1", "s")] if session_first else []
    assert await rows(engine, plan) == [
        *first,
        (run_id, "T1", f"0:{SECRET}"),
        (run_id, "T1", f"1:{SECRET}"),
        (run_id, "T3", "t"),
    ]
    events = await engine.history(run_id)
    for step in ("T1", "S2", "T3", "S4"):
        assert steps_of(events, step) == [(EventKind.STEP_SUCCEEDED, 1)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


@pytest.mark.postgres
async def test_a_lone_steps_one_write_and_its_progress_are_one_statement(
    postgres_url: str, unique: str, plan: Plan, log: QueryLog
) -> None:
    """No BEGIN on the steps' connections: each write travels inside its progress statement.

    T1's goes with the run's insert too (the first step of a lone start, see saga/pending.py).
    T1 then queues two writes (the ordinary way) in a second run: BEGIN shows up then, so the
    log does see the transactions it counts.
    """
    saga = four_steps(f"queued_{unique}", plan)
    async with on_postgres(postgres_url, saga, plan, log, unique) as engine:
        log.queries.clear()
        run_id, run = await run_once(engine, saga)
        assert run.status is SagaStatus.COMPLETED
        first = log.matching(plan.table, "INSERT INTO saga_runs", "saga_events")
        fenced = log.matching(plan.table, "saga_runs", "fenced off")
        assert (len(first), len(fenced)) == (1, 1), log.queries
        assert log.matching(plan.table) == [*first, *fenced], "a write went on its own"
        assert log.matching("INSERT INTO saga_runs") == first, "the start went on its own"
        assert log.in_transaction(plan.table) == [False, False]
        async with engine.db.read() as conn:
            xmins = await conn.execute(
                sa.text(
                    f"SELECT step, xmin::text FROM {plan.table} WHERE run_id = :r "
                    "UNION ALL SELECT step || '/event', xmin::text FROM saga_events "
                    "WHERE saga_id = :r AND kind = 'step_succeeded' AND step IN ('T1', 'T3')"
                ),
                {"r": run_id},
            )
            by_step = dict(tuple(r) for r in xmins)
        assert by_step["T1"] == by_step["T1/event"] != by_step["T3"] == by_step["T3/event"]

        plan.t1_writes = 2
        log.queries.clear()
        _again, run = await run_once(engine, saga)
        assert run.status is SagaStatus.COMPLETED
        # T1's progress (with the run's insert), after its writes: in the transaction they
        # opened (the log sees it).
        assert log.in_transaction("INSERT INTO saga_runs") == [True], log.queries
        assert log.in_transaction(plan.table, "fenced off") == [False], "T3 still combined"


@pytest.mark.parametrize("session_first", [False, True])
async def test_a_failing_write_fails_the_attempt_and_leaves_nothing(
    make_engine: Callable[..., SagaEngine],
    unique: str,
    plan: Plan,
    log: QueryLog,
    session_first: bool,
) -> None:
    """A unique violation fails attempt 1 (retried; its ctx.session row rolled back too).

    The failure is recorded as the database's error, without the statement or its values.
    """
    plan.t1_conflict_until, plan.t1_session_first = 1, session_first
    engine, saga = await staged(make_engine, plan, unique, log)
    async with engine.db.begin() as conn:
        await conn.execute(
            sa.text(f"INSERT INTO {plan.table} (id, run_id, step) VALUES (1000000, 'x', 'o')")
        )
    run_id, run = await run_once(engine, saga)

    assert run.status is SagaStatus.COMPLETED
    mine = [r for r in await rows(engine, plan) if r[0] == run_id]
    first = [(run_id, "T1", "s")] if session_first else []
    assert mine == [*first, (run_id, "T1", f"0:{SECRET}"), (run_id, "T3", "t")]
    failed_quietly_once(await engine.history(run_id), "T1")


@pytest.mark.postgres
async def test_while_other_writes_are_in_flight_a_lone_steps_write_opens_a_shareable_transaction(
    postgres_url: str, unique: str, plan: Plan, log: QueryLog
) -> None:
    """Under load a queued write runs in the step's transaction, where others can join it.

    Another run's progress write is held by a row lock, so the group commit is busy: run B's
    T1 and T3 are each a group of one, yet their writes go in a transaction (BEGIN before
    their progress), not combined. Once nothing is in flight a third run's are combined again.
    """
    entered, gate = asyncio.Event(), asyncio.Event()
    blocker = Saga(f"queued_blocker_{unique}")

    @blocker.step("B1")
    async def b1(ctx: StepContext) -> None:
        entered.set()
        await gate.wait()

    saga = four_steps(f"queued_{unique}", plan)
    raw = await asyncpg.connect(
        make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        async with on_postgres(postgres_url, saga, plan, log, unique, blocker) as engine:
            async with engine.worker(concurrency=4):
                held = await engine.start(blocker.name, {})
                await asyncio.wait_for(entered.wait(), timeout=WAIT.total_seconds())
                lock = raw.transaction()
                await lock.start()
                await raw.execute("SELECT 1 FROM saga_runs WHERE id = $1 FOR UPDATE", held)
                gate.set()  # B1's success now waits for the lock, inside a group commit

                async def lock_waits() -> int:
                    return await raw.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )

                await eventually(lock_waits, lambda n: n >= 1, what="B1's write waiting")
                log.queries.clear()
                run_id = await engine.start(saga.name, {})

                async def written() -> list[tuple[Any, ...]]:
                    return await rows(engine, plan)

                await eventually(written, lambda r: len(r) == 2, what="T1's and T3's rows")
                # The writes went through SQLAlchemy (not logged); the progress statements show
                # where: after BEGIN on their connection, and none was a combined statement.
                assert log.matching("fenced off") == [], log.queries
                assert log.in_transaction("WITH u AS (") == [True, True], log.queries
                await lock.rollback()
                run = await engine.wait(run_id, timeout=WAIT)
                assert run.status is SagaStatus.COMPLETED
                assert (await engine.wait(held, timeout=WAIT)).status is SagaStatus.COMPLETED

                log.queries.clear()
                quiet_id = await engine.start(saga.name, {})
                assert (await engine.wait(quiet_id, timeout=WAIT)).status is SagaStatus.COMPLETED
            # T1's write goes with the run's insert, T3's with its progress (both combined).
            assert log.in_transaction(plan.table, "saga_runs") == [False, False], "quiet: combined"
            assert len(log.matching(plan.table, "fenced off")) == 1, log.queries
            assert await rows(engine, plan) == [
                (run_id, "T1", f"0:{SECRET}"),
                (run_id, "T3", "t"),
                (quiet_id, "T1", f"0:{SECRET}"),
                (quiet_id, "T3", "t"),
            ]
    finally:
        await raw.close()


@pytest.mark.postgres
async def test_on_psycopg_queued_writes_go_the_ordinary_way(
    postgres_url: str, unique: str, plan: Plan
) -> None:
    """Not asyncpg: no combined statement, the same outcome."""
    url = make_url(postgres_url).set(drivername="postgresql+psycopg").render_as_string(False)
    saga = four_steps(f"queued_{unique}", plan)
    engine = SagaEngine(url, [saga], worker_id=f"w-{unique}", lease=WAIT)
    try:
        await engine.create_schema()
        async with engine.db.begin() as conn:
            await conn.run_sync(table_of(plan.table).metadata.create_all)
        run_id, run = await run_once(engine, saga)
        assert run.status is SagaStatus.COMPLETED
        assert await rows(engine, plan) == [(run_id, "T1", f"0:{SECRET}"), (run_id, "T3", "t")]
    finally:
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {plan.table}"))
        await engine.close()


@pytest.mark.postgres
async def test_in_a_step_group_the_next_member_reads_what_the_one_before_queued(
    postgres_url: str, unique: str, plan: Plan, log: QueryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members count the rows, then queue one: each sees those of the members before it."""
    monkeypatch.setattr(step_group, "WINDOW", 60.0)
    members, gate = 4, asyncio.Event()
    saga = Saga(f"queued_group_{unique}")

    @saga.step("COUNT", transactional=True)
    async def count(ctx: StepContext) -> dict[str, Any]:
        seen = await ctx.session.scalar(sa.text(f"SELECT count(*) FROM {plan.table}"))
        if ctx.data["i"] == 0:
            await gate.wait()
        ctx.write(sa.insert(table_of(plan.table)).values(run_id=ctx.saga_id, step="COUNT"))
        return {"seen": seen}

    # Started one after another, each would take its insert along alone (saga/pending.py).
    async with on_postgres(
        postgres_url, saga, plan, log, unique, insert_with_first_step=False
    ) as engine:
        assert isinstance(engine.store, SqlStore)
        assert engine.store.step_groups is not None
        groups = engine.store.step_groups
        async with engine.worker(concurrency=members * 2):
            ids = [await engine.start(saga.name, {"i": i}) for i in range(members)]

            async def gathered() -> int:
                return groups.gathering

            await eventually(gathered, lambda n: n == members, what="every run in one group")
            gate.set()
            runs = [await engine.wait(run_id, timeout=WAIT) for run_id in ids]
        assert {run.status for run in runs} == {SagaStatus.COMPLETED}
        assert sorted(run.outputs["COUNT"]["seen"] for run in runs) == list(range(members))
        async with engine.db.read() as conn:
            txns = await conn.scalar(
                sa.text(f"SELECT count(DISTINCT xmin::text) FROM {plan.table}")
            )
            total = await conn.scalar(sa.text(f"SELECT count(*) FROM {plan.table}"))
        assert (txns, total) == (1, members), "not one shared transaction, each row once"
        for run_id in ids:
            events = await engine.history(run_id)
            assert steps_of(events, "COUNT") == [(EventKind.STEP_SUCCEEDED, 1)]


@pytest.mark.postgres
async def test_an_in_list_and_typed_values_go_in_one_statement(
    postgres_url: str, unique: str, plan: Plan, log: QueryLog
) -> None:
    """An expanding IN, a JSON value and a Core UPDATE: compiled for asyncpg, sent combined."""
    saga = Saga(f"queued_typed_{unique}")
    table = table_of(plan.table)

    @saga.step("MARK", transactional=True)
    async def mark(ctx: StepContext) -> None:
        ids = ctx.data["ids"]
        doc = {"k": [1, "é"], "by": ctx.saga_id}
        ctx.write(sa.update(table).where(table.c.id.in_(ids)).values(note="marked", doc=doc))

    async with on_postgres(postgres_url, saga, plan, log, unique) as engine:
        async with engine.db.begin() as conn:
            await conn.execute(sa.insert(table), [{"note": f"n{i}"} for i in range(4)])
            ids = list((await conn.scalars(sa.select(table.c.id).order_by(table.c.id))).all())
        log.queries.clear()
        async with engine.worker():
            run_id = await engine.start(saga.name, {"ids": ids[1:3]})
            run = await engine.wait(run_id, timeout=WAIT)
        assert run.status is SagaStatus.COMPLETED
        # The only step: its write went in the statement that inserted the run.
        assert log.in_transaction(plan.table, "INSERT INTO saga_runs") == [False], log.queries
        assert log.matching(plan.table) == log.matching(plan.table, "INSERT INTO saga_runs")
        async with engine.db.read() as conn:
            stored = (await conn.execute(sa.select(table.c.note, table.c.doc))).all()
        doc = {"k": [1, "é"], "by": run_id}
        assert sorted(map(tuple, stored), key=str) == sorted(
            [("n0", None), ("marked", doc), ("marked", doc), ("n3", None)], key=str
        )


async def test_ctx_write_outside_a_transactional_step_is_refused() -> None:
    """As ctx.session is; a bad statement or bad parameters are refused at once."""
    from cloudphone.saga.testing import StepEnvironment

    env = StepEnvironment()
    plain = env.context("S")
    with pytest.raises(RuntimeError, match=r"not transactional.*ctx\.write"):
        plain.write(sa.text("DELETE FROM t"))
    with pytest.raises(RuntimeError, match=r"StepEnvironment\.run"):
        env.context("T", session=object()).write(sa.text("DELETE FROM t"))  # type: ignore[arg-type]
    writes = WriteQueue()
    ctx = dataclasses.replace(env.context("T", session=object()), _writes=writes)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SQLAlchemy statement"):
        ctx.write("DELETE FROM t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        ctx.write(sa.text("DELETE FROM t"), "x")  # type: ignore[arg-type]
    params = {"a": 1}
    ctx.write(sa.text("DELETE FROM t WHERE a = :a"), params)
    params["a"] = 2
    assert [w.params for w in writes.take()] == [{"a": 1}], "a private copy, taken when queued"
    with pytest.raises(RuntimeError, match="after the step's body returned"):
        ctx.write(sa.text("DELETE FROM t"))  # it would never run: refused, not dropped


async def test_a_write_queued_after_the_body_returned_is_refused(
    make_engine: Callable[..., SagaEngine], unique: str, plan: Plan
) -> None:
    """A context kept past its body cannot queue more: that write would never run."""
    kept: list[StepContext] = []
    saga = Saga(f"queued_late_{unique}")

    @saga.step("T", transactional=True)
    async def t(ctx: StepContext) -> None:
        kept.append(ctx)
        ctx.write(sa.insert(table_of(plan.table)).values(run_id=ctx.saga_id, step="T"))

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.run_sync(table_of(plan.table).metadata.create_all)
    run_id, run = await run_once(engine, saga)
    assert run.status is SagaStatus.COMPLETED
    with pytest.raises(RuntimeError, match="after the step's body returned"):
        kept[0].write(sa.insert(table_of(plan.table)).values(run_id=run_id, step="late"))
    assert await rows(engine, plan) == [(run_id, "T", None)]
