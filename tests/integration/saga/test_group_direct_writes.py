"""Step groups on PostgreSQL: once the group's transaction is open, queued writes skip SQLAlchemy.

A member's ``ctx.write`` statements go straight to asyncpg (``step_group._run_member_writes``)
when a statement was already sent in the group's transaction; the one that would open it goes
through SQLAlchemy. Each test holds one group open (the member whose body runs first waits on
a gate until every run has joined). What must hold: the writes commit once, in the group's
transaction, with the progress; a write that fails there rolls the group back and the attempt
runs again alone, where a real conflict fails it with SQLAlchemy's error and without its SQL or
values; a connection killed under one loses no write and doubles none.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from cloudphone.saga import EventKind, RetryPolicy, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.store import step_group
from cloudphone.saga.store.pg_write import driver_sql
from tests.integration.saga.test_queued_writes import (
    SECRET,
    Plan,
    QueryLog,
    failed_quietly_once,
    on_postgres,
    steps_of,
    table_of,
)
from tests.integration.saga.test_step_groups import RUNS, Stage
from tests.integration.saga.test_step_groups import Plan as GroupPlan

pytestmark = pytest.mark.postgres

TAKEN = 1000000
"""The id the clashing inserts of attempt 1 take (``failed_quietly_once`` looks for it)."""

SUCCEEDED_ONCE = [(EventKind.STEP_SUCCEEDED, 1)]


@dataclass
class Tricks:
    """What the members do, by place: the order in which the runs' bodies first ran.

    In the group the bodies run one after another, so a run's place is its turn in the group.
    """

    session_first: bool = True
    """Place 0 reads on ``ctx.session`` first: the group's transaction is open from then on."""
    clash: set[int] = field(default_factory=set)
    """Places whose attempt 1 inserts its row with id :data:`TAKEN`."""
    kill: set[int] = field(default_factory=set)
    """Places whose write kills its connection (once)."""
    places: dict[str, int] = field(default_factory=dict)
    bodies: list[int] = field(default_factory=list)

    def ran(self) -> dict[int, int]:
        """How often each place's body ran."""
        return dict(Counter(self.bodies))


class Sent:
    """What went to the database: executed by SQLAlchemy, or sent by asyncpg as text."""

    def __init__(self) -> None:
        self.by_sqlalchemy: list[str] = []
        """Statements SQLAlchemy executed on the engine (``before_cursor_execute``)."""
        self.by_driver = QueryLog()
        """What asyncpg sent by text on the engine's connections: not SQLAlchemy's."""

    def attach(self, engine: SagaEngine) -> None:
        def executed(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            self.by_sqlalchemy.append(statement)

        event.listen(engine.db.engine.sync_engine, "before_cursor_execute", executed)

    def through_sqlalchemy(self, part: str) -> list[str]:
        return [s for s in self.by_sqlalchemy if part in s]


def grouped(
    name: str, table: str, tricks: Tricks, gate: asyncio.Event
) -> tuple[Saga, list[QueuedWrite]]:
    """One transactional step PUT that queues one INSERT of the run's row (or a killer).

    Its statements are built once, as a saga's module-level statements are; returned with
    it, as writes of each shape of parameters, to be used once before the group (see warm).
    """
    saga = Saga(name, retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(0)))
    put_row = sa.insert(table_of(table))
    killer = sa.text(
        f"INSERT INTO {table} (run_id, step) SELECT :r, 'kill' "
        "FROM generate_series(1, 3) WHERE pg_terminate_backend(pg_backend_pid())"
    )

    @saga.step("PUT", transactional=True)
    async def put(ctx: StepContext) -> None:
        place = tricks.places.setdefault(ctx.saga_id, len(tricks.places))
        tricks.bodies.append(place)
        if place == 0:
            if tricks.session_first:
                await ctx.session.execute(sa.text("SELECT 1"))
            await gate.wait()
        if place in tricks.kill:
            tricks.kill.discard(place)
            ctx.write(killer, {"r": ctx.saga_id})
            return
        row: dict[str, Any] = {"run_id": ctx.saga_id, "step": "PUT", "note": f"{place}:{SECRET}"}
        if place in tricks.clash and ctx.attempt == 1:
            row["id"] = TAKEN
        ctx.write(put_row, row)

    row = {"run_id": "", "step": "", "note": ""}
    shapes = [QueuedWrite(put_row, row), QueuedWrite(put_row, {**row, "id": 0})]
    return saga, [*shapes, QueuedWrite(killer, {"r": ""})]


async def warm(engine: SagaEngine, writes: list[QueuedWrite]) -> None:
    """Use each statement once, as the runs before would have.

    In a group a statement goes direct from its second use (``pg_write.driver_sql``); without
    this, these tests' first member would be its first.
    """
    async with engine.db.read() as conn:
        for write in writes:
            assert driver_sql(write, conn, compile_new=False) is None
            assert driver_sql(write, conn, compile_new=False) is not None


@pytest.fixture
def tricks() -> Tricks:
    return Tricks()


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
async def stage(
    postgres_url: str,
    unique: str,
    tricks: Tricks,
    sent: Sent,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stage]:
    """RUNS runs of PUT in one group (a wide window; started apart, they would run alone)."""
    monkeypatch.setattr(step_group, "WINDOW", 60.0)
    gate, plan = GroupPlan(), Plan(table=f"direct_rows_{unique}")
    saga, writes = grouped(f"direct_{unique}", plan.table, tricks, gate.gate)
    async with on_postgres(
        postgres_url, saga, plan, sent.by_driver, unique, insert_with_first_step=False
    ) as engine:
        sent.attach(engine)
        await warm(engine, writes)
        async with engine.worker(concurrency=RUNS * 2):
            yield Stage(engine, saga, gate, plan.table)


async def histories(stage: Stage, ids: list[str]) -> list[list[tuple[EventKind, int | None]]]:
    return [steps_of(await stage.engine.history(run_id), "PUT") for run_id in ids]


@pytest.mark.parametrize("session_first", [True, False], ids=["session_opens", "write_opens"])
async def test_members_writes_go_straight_to_the_driver_in_the_groups_transaction(
    stage: Stage, tricks: Tricks, sent: Sent, session_first: bool
) -> None:
    """Sent by asyncpg inside the group's BEGIN, unseen by SQLAlchemy; committed once, together.

    Only a write that opens the transaction (place 0's, when it read nothing before) goes
    through SQLAlchemy.
    """
    tricks.session_first = session_first
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert tricks.ran() == dict.fromkeys(range(RUNS), 1), "no body ran twice"
    assert stage.metric("saga_step_group_reruns_total") == 0
    assert await histories(stage, ids) == [SUCCEEDED_ONCE] * RUNS
    insert = f"INSERT INTO {stage.table}"
    through_sqlalchemy = 0 if session_first else 1
    assert len(sent.through_sqlalchemy(insert)) == through_sqlalchemy, sent.by_sqlalchemy
    direct = sent.by_driver.in_transaction(insert)
    assert direct == [True] * (RUNS - through_sqlalchemy), sent.by_driver.queries
    assert await stage.rows() == dict.fromkeys(ids, 1)
    async with stage.engine.db.read() as conn:
        txns = await conn.scalar(
            sa.text(
                f"SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM {stage.table} "
                "UNION ALL SELECT xmin::text FROM saga_events "
                "WHERE saga_id = ANY(:ids) AND kind = 'step_succeeded') AS t"
            ),
            {"ids": ids},
        )
    assert txns == 1, "the rows and every step's success: not one transaction"


@pytest.mark.parametrize("clash", ["committed", "member"])
async def test_a_direct_write_that_fails_reruns_the_group_alone(
    stage: Stage, tricks: Tricks, clash: str
) -> None:
    """A unique violation sent straight rolls the group back; alone it fails as usual.

    ``committed``: place 0's insert takes the id of a committed row (the first member: its
    error would otherwise be the attempt's failure at once). ``member``: places 1 and 2 insert
    the same id: place 2's fails on place 1's uncommitted row, which the rollback undoes; alone
    one of them wins. The loser's attempt 1 fails with SQLAlchemy's IntegrityError, without
    the SQL, its values or the secret, and attempt 2 completes.
    """
    if clash == "committed":
        tricks.clash = {0}
        async with stage.engine.db.begin() as conn:
            await conn.execute(
                sa.text(f"INSERT INTO {stage.table} (id, run_id, step) VALUES (:id, 'x', 'o')"),
                {"id": TAKEN},
            )
    else:
        tricks.clash = {1, 2}
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert stage.metric("saga_step_group_reruns_total") == RUNS, "each member ran again"
    last = max(tricks.clash)
    in_group = dict.fromkeys(range(last + 1), 2)  # ran in the group, then alone
    by_place = {tricks.places[run_id]: run_id for run_id in ids}
    attempts = dict(zip(ids, await histories(stage, ids), strict=True))
    failing = [tricks.places[run_id] for run_id in ids if attempts[run_id] != SUCCEEDED_ONCE]
    (loser,) = failing
    assert loser in tricks.clash, failing
    assert tricks.ran() == {**dict.fromkeys(range(RUNS), 1), **in_group, loser: 3}
    failed_quietly_once(await stage.engine.history(by_place[loser]), "PUT")
    expected = dict.fromkeys(ids, 1)
    assert await stage.rows() == ({**expected, "x": 1} if clash == "committed" else expected)
    async with stage.engine.db.read() as conn:
        holder = await conn.scalar(
            sa.text(f"SELECT run_id FROM {stage.table} WHERE id = :id"), {"id": TAKEN}
        )
    winner = "x" if clash == "committed" else by_place[({1, 2} - {loser}).pop()]
    assert holder == winner


@pytest.mark.parametrize("killer", [0, 2])
async def test_a_connection_killed_under_a_direct_write_loses_nothing(
    stage: Stage, tricks: Tricks, sent: Sent, killer: int
) -> None:
    """The write kills the group's backend: every run completes as attempt 1, each row once.

    Under the first member's write (place 0), its attempt learns the connection failed and
    asks whether its progress landed (it did not: it runs again, not counted as a rerun) while
    the others run again alone; under a later member's, every member runs again alone.
    """
    tricks.kill = {killer}
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert await histories(stage, ids) == [SUCCEEDED_ONCE] * RUNS
    assert await stage.rows() == dict.fromkeys(ids, 1), "a write lost, doubled or half done"
    # asyncpg drops its query log when the connection dies, so the killer leaves no trace
    # there; SQLAlchemy never saw it: it went straight to the driver.
    assert sent.through_sqlalchemy("pg_terminate_backend") == [], "the killer went via SQLAlchemy"
    assert not tricks.kill, "the killer never ran"
    in_group = dict.fromkeys(range(killer + 1), 2)
    assert tricks.ran() == {**dict.fromkeys(range(RUNS), 1), **in_group}
    reruns = RUNS - 1 if killer == 0 else RUNS
    assert stage.metric("saga_step_group_reruns_total") == reruns
