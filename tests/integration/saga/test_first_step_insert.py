"""A lone start's insert goes with its first transactional step's commit (saga/pending.py).

On PostgreSQL: nothing of the run exists until that commit, which holds the run's row, its
``saga_started`` event, the step's business rows and its progress; the history is the one an
insert of its own would have left. A slow first step gets the insert sent by itself after
``BUDGET`` (start() returns, the lease is renewed from then on); a worker that stops first
gives the run back to start(), which inserts it for any worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cloudphone.saga import (
    EventKind,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
    pending,
)
from cloudphone.saga.errors import DatabaseUnavailableError
from tests.integration.saga.test_queued_writes import run_once, steps_of, table_of
from tests.integration.saga.test_queued_writes_outage import outages
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]

WAIT = timedelta(seconds=20)
LONG = 60.0
"""A budget no first step here outlasts: start() waits for the step's commit."""
TAKEN_ID = 1_000_000
"""The business row id a conflicting first attempt writes (it exists already)."""
SLOW_KILL = (
    "INSERT INTO {table} (run_id, step) SELECT :r, 'kill' FROM generate_series(1, 3) "
    "WHERE CASE WHEN (SELECT count(*) FROM pg_sleep(3)) = 1 "
    "THEN pg_terminate_backend(pg_backend_pid()) ELSE false END"
)
"""A write that takes 3 s, then kills its own connection (at the next row: in the statement)."""


@dataclass
class Probe:
    """What the first step (T1) does, and what its body saw from another connection."""

    table: str
    raw: asyncpg.Connection
    via: str = "write"
    """How T1 writes its business row: ``write`` (one ctx.write), ``writes`` (two),
    ``session`` (ctx.session), ``conflict`` (attempt 1's ctx.write hits TAKEN_ID),
    ``kill`` (the first body's write is SLOW_KILL)."""
    fail_once: bool = False
    hold: asyncio.Event | None = None
    """T1's body number ``held`` waits for it."""
    held: int = 1
    work: float = 0.0
    """Seconds T1's body works (simulated)."""
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    returned: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: list[int] = field(default_factory=list)
    seen: list[tuple[int, list[str]]] = field(default_factory=list)
    """Per T1 body: the run's saga_runs rows and its events' kinds, read on ``raw``."""


def saga_of(name: str, probe: Probe) -> Saga:
    """T1 (transactional, probed) → S2 (plain) → T3 (transactional, one ctx.write)."""
    saga = Saga(name, retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(0)))
    table = table_of(probe.table)

    @saga.step("T1", transactional=True)
    async def t1(ctx: StepContext) -> dict[str, Any]:
        probe.attempts.append(ctx.attempt)
        probe.seen.append(await stored(probe.raw, ctx.saga_id))
        probe.entered.set()
        if probe.hold is not None and len(probe.attempts) == probe.held:
            await probe.hold.wait()
        if probe.work:
            await asyncio.sleep(probe.work)  # simulated work
        if probe.fail_once and ctx.attempt == 1:
            raise RuntimeError("flaky")
        row = {"run_id": ctx.saga_id, "step": "T1"}
        if probe.via == "session":
            await ctx.session.execute(sa.insert(table).values(**row, note="0"))
        elif probe.via == "conflict" and ctx.attempt == 1:
            ctx.write(sa.insert(table).values(**row, id=TAKEN_ID, note="0"))
        elif probe.via == "kill" and len(probe.attempts) == 1:
            ctx.write(sa.text(SLOW_KILL.format(table=probe.table)), {"r": ctx.saga_id})
        else:
            for i in range(2 if probe.via == "writes" else 1):
                ctx.write(sa.insert(table).values(**row, note=str(i)))
        probe.returned.set()
        return {"t1": ctx.attempt}

    @saga.step("S2")
    async def s2(ctx: StepContext) -> dict[str, Any]:
        return {"s2": 1}

    @saga.step("T3", transactional=True)
    async def t3(ctx: StepContext) -> None:
        ctx.write(sa.insert(table).values(run_id=ctx.saga_id, step="T3", note="t"))

    return saga


async def stored(raw: asyncpg.Connection, run_id: str) -> tuple[int, list[str]]:
    runs = await raw.fetchval("SELECT count(*) FROM saga_runs WHERE id = $1", run_id)
    kinds = await raw.fetch("SELECT kind FROM saga_events WHERE saga_id = $1 ORDER BY seq", run_id)
    return runs, [r["kind"] for r in kinds]


@pytest.fixture
async def raw(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, outside every engine's pool."""
    conn = await asyncpg.connect(
        make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def probe(raw: asyncpg.Connection, unique: str) -> AsyncIterator[Probe]:
    table = f"first_rows_{unique}"
    await raw.execute(
        f"CREATE TABLE {table} (id serial PRIMARY KEY, run_id text, step text, note text, doc json)"
    )
    try:
        yield Probe(table=table, raw=raw)
    finally:
        await raw.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def saga(probe: Probe, unique: str) -> Saga:
    return saga_of(f"first_{unique}", probe)


Engines = Callable[..., Awaitable[SagaEngine]]


@pytest.fixture
def engines(make_engine: Callable[..., SagaEngine], saga: Saga) -> Engines:
    """A new engine of the probed saga (schema created); options as for make_engine."""

    async def make(**options: Any) -> SagaEngine:
        engine = make_engine([saga], **options)
        await engine.create_schema()
        return engine

    return make


def shape(events: list[Any]) -> list[tuple[EventKind, str | None, int | None, int]]:
    return [(e.kind, e.step, e.attempt, e.seq) for e in events]


async def business(engine: SagaEngine, probe: Probe, run_id: str) -> list[tuple[str, str]]:
    async with engine.db.read() as conn:
        result = await conn.execute(
            sa.text(f"SELECT step, note FROM {probe.table} WHERE run_id = :r ORDER BY id"),
            {"r": run_id},
        )
        return [(r.step, r.note) for r in result]


async def test_nothing_of_the_run_exists_before_its_first_step_commits(
    engines: Engines, saga: Saga, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T1's body sees no row and no event; the history is the one of an insert of its own."""
    monkeypatch.setattr(pending, "BUDGET", LONG)
    deferred, ordinary = await engines(), await engines(insert_with_first_step=False)
    async with deferred.worker():
        run_id = await deferred.start(saga.name, {})
        # start() returned once T1's commit (the insert with it) landed.
        landed = steps_of(await deferred.history(run_id), "T1")
        assert landed == [(EventKind.STEP_SUCCEEDED, 1)]
        run = await deferred.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert probe.seen == [(0, [])], "the run was written before its first step committed"
    other_id, other = await run_once(ordinary, saga)
    assert other.status is SagaStatus.COMPLETED
    assert probe.seen[1] == (1, ["saga_started"]), "the probe cannot see a stored run"

    history = shape(await deferred.history(run_id))
    assert history == shape(await ordinary.history(other_id))
    assert [seq for *_rest, seq in history] == list(range(1, len(history) + 1))
    assert await business(deferred, probe, run_id) == [("T1", "0"), ("T3", "t")]


@pytest.mark.parametrize("via", ["write", "writes", "session"])
async def test_the_insert_and_the_first_steps_rows_commit_in_one_transaction(
    engines: Engines, saga: Saga, probe: Probe, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """saga_started, T1's step_succeeded and T1's rows share an xmin; T3's differs."""
    monkeypatch.setattr(pending, "BUDGET", LONG)
    probe.via = via
    engine = await engines()
    run_id, run = await run_once(engine, saga)
    assert run.status is SagaStatus.COMPLETED
    async with engine.db.read() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT kind || '/' || coalesce(step, ''), xmin::text FROM saga_events "
                "WHERE saga_id = :r AND kind IN ('saga_started', 'step_succeeded') "
                f"UNION ALL SELECT step || '/' || note, xmin::text FROM {probe.table} "
                "WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        xmin = dict(tuple(r) for r in result)
    t1 = {"saga_started/", "step_succeeded/T1", "T1/0", *(["T1/1"] if via == "writes" else [])}
    assert {xmin[k] for k in t1} == {xmin["saga_started/"]}, xmin
    assert xmin["T3/t"] == xmin["step_succeeded/T3"] != xmin["saga_started/"], xmin


@pytest.mark.parametrize("via", ["raises", "conflict"])
async def test_a_first_attempt_that_fails_inserts_the_run_and_is_retried(
    engines: Engines, saga: Saga, probe: Probe, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """Attempt 1 raises (or its queued write conflicts): recorded, attempt 2 commits once."""
    monkeypatch.setattr(pending, "BUDGET", LONG)  # start() returns once the failure is stored
    probe.fail_once, probe.via = via == "raises", "conflict" if via == "conflict" else "write"
    await probe.raw.execute(f"INSERT INTO {probe.table} (id, step) VALUES ($1, 'x')", TAKEN_ID)
    deferred, ordinary = await engines(), await engines(insert_with_first_step=False)
    async with deferred.worker():
        run_id = await asyncio.wait_for(deferred.start(saga.name, {}), 10)
        assert (await deferred.get(run_id)).id == run_id, "start() returned before the insert"
        run = await deferred.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert probe.attempts == [1, 2]
    assert probe.seen[0] == (0, [])
    assert probe.seen[1] == (1, ["saga_started", "step_failed", "retry_scheduled"])
    assert steps_of(await deferred.history(run_id), "T1") == [
        (EventKind.STEP_FAILED, 1),
        (EventKind.RETRY_SCHEDULED, 2),
        (EventKind.STEP_SUCCEEDED, 2),
    ]
    assert await business(deferred, probe, run_id) == [("T1", "0"), ("T3", "t")]
    other_id, _other = await run_once(ordinary, saga)
    assert shape(await deferred.history(run_id)) == shape(await ordinary.history(other_id))


async def test_a_slow_first_step_does_not_hold_up_start(
    engines: Engines, saga: Saga, probe: Probe
) -> None:
    """After BUDGET the run is inserted by itself (RUNNING at T1, this worker's); T1 goes on."""
    probe.hold = asyncio.Event()
    engine = await engines()
    async with engine.worker():
        run_id = await asyncio.wait_for(engine.start(saga.name, {}), 10)
        await asyncio.wait_for(probe.entered.wait(), 10)
        assert not probe.returned.is_set(), "start() waited for the slow step"
        stored_run = await engine.get(run_id)
        assert (stored_run.status, stored_run.current_step, stored_run.attempt) == (
            SagaStatus.RUNNING,
            "T1",
            1,
        )
        assert stored_run.owner == engine.worker_id
        assert shape(await engine.history(run_id)) == [(EventKind.SAGA_STARTED, None, None, 1)]
        probe.hold.set()
        run = await engine.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert steps_of(await engine.history(run_id), "T1") == [(EventKind.STEP_SUCCEEDED, 1)]
    assert await business(engine, probe, run_id) == [("T1", "0"), ("T3", "t")]


@pytest.mark.parametrize("deferring", [True, False])
async def test_a_start_with_an_idempotency_key_inserts_the_run_before_its_first_step(
    engines: Engines, saga: Saga, probe: Probe, deferring: bool
) -> None:
    """A key must be found at once: the row and saga_started exist when T1's body runs."""
    engine = await engines(insert_with_first_step=deferring)
    async with engine.worker():
        keyed = await engine.start(saga.name, {}, idempotency_key="k")
        assert (await engine.wait(keyed, timeout=WAIT)).status is SagaStatus.COMPLETED
        if not deferring:  # and without a key, once deferring is off
            lone = await engine.start(saga.name, {})
            assert (await engine.wait(lone, timeout=WAIT)).status is SagaStatus.COMPLETED
    assert probe.seen == [(1, ["saga_started"])] * (1 if deferring else 2)
    assert await business(engine, probe, keyed) == [("T1", "0"), ("T3", "t")]


@pytest.mark.parametrize("written", [False, True])
async def test_a_worker_stopping_during_the_first_step_leaves_the_run_to_another(
    engines: Engines,
    saga: Saga,
    probe: Probe,
    monkeypatch: pytest.MonkeyPatch,
    written: bool,
) -> None:
    """T1 outlasts the worker's grace: another worker completes the run, T1's row once.

    Unwritten at the stop (a long budget), start() inserts it unclaimed; inserted by the
    budget, it stays this worker's until its lease runs out (then taken over).
    """
    if not written:
        monkeypatch.setattr(pending, "BUDGET", LONG)
    probe.hold = asyncio.Event()  # never set: the stop cancels the attempt
    first, second = await engines(), await engines()
    serving, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with first.worker(grace=timedelta(milliseconds=100)):
            serving.set()
            await stop.wait()

    server = asyncio.create_task(serve())
    await asyncio.wait_for(serving.wait(), 10)
    starting = asyncio.create_task(first.start(saga.name, {}))
    await asyncio.wait_for(probe.entered.wait(), 10)
    if written:
        await asyncio.wait_for(asyncio.shield(starting), 10)
    assert starting.done() is written
    stop.set()
    await asyncio.wait_for(server, 10)
    run_id = await asyncio.wait_for(starting, 10)

    left = await first.get(run_id)
    if written:
        assert (left.status, left.owner) == (SagaStatus.RUNNING, first.worker_id)
    else:
        assert (left.status, left.owner, left.attempt) == (SagaStatus.PENDING, None, 1)
    assert shape(await first.history(run_id)) == [(EventKind.SAGA_STARTED, None, None, 1)]
    async with second.worker():
        run = await second.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert probe.attempts == [1, 2 if written else 1]
    taken_over = [e.kind for e in await second.history(run_id)].count(EventKind.LEASE_TAKEOVER)
    assert taken_over == (1 if written else 0)
    assert await business(second, probe, run_id) == [("T1", "0"), ("T3", "t")]


async def test_a_first_step_longer_than_two_leases_keeps_its_run(
    engines: Engines, saga: Saga, probe: Probe
) -> None:
    """Inserted by the budget, the run's lease is renewed while T1 works 2.5 leases long.

    Another worker polls the whole time, ready to take an expired lease over.
    """
    lease = timedelta(seconds=1)
    probe.work = 2.5 * lease.total_seconds()
    first, rival = await engines(lease=lease), await engines(lease=lease)
    async with rival.worker(), first.worker():
        run_id = await asyncio.wait_for(first.start(saga.name, {}), 10)
        created = (await first.get(run_id)).created_at
        await eventually(
            lambda: first.get(run_id),
            lambda r: r.lease_expires_at is not None and r.lease_expires_at > created + lease,
            what="the pending run's lease renewed",
        )
        assert not probe.returned.is_set(), "T1 was done before its lease was renewed"
        run = await first.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    events = await first.history(run_id)
    assert [e for e in events if e.kind is EventKind.LEASE_TAKEOVER] == []
    assert steps_of(events, "T1") == [(EventKind.STEP_SUCCEEDED, 1)]
    assert probe.attempts == [1]
    assert await business(first, probe, run_id) == [("T1", "0"), ("T3", "t")]


async def test_after_a_lost_first_commit_start_does_not_wait_for_the_steps_rerun(
    engines: Engines,
    saga: Saga,
    probe: Probe,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A first commit lost past the budget: start() says so at once, not after T1's re-run.

    T1's commit is in flight when the budget passes, then loses its connection: start()
    raises DatabaseUnavailableError (the run may exist, as after a lost insert); the runner
    finds nothing landed, runs T1 again (same attempt, blocked there) and inserts the run.
    """
    monkeypatch.setattr(pending, "BUDGET", 1.0)  # passes inside SLOW_KILL's 3 s
    probe.via, probe.hold, probe.held = "kill", asyncio.Event(), 2
    engine = await engines()

    async def bodies() -> int:
        return len(probe.attempts)

    async def listed() -> list[Any]:
        return await engine.list(saga_type=saga.name)

    async with engine.worker():
        starting = asyncio.create_task(engine.start(saga.name, {}))
        try:
            done, _ = await asyncio.wait([starting], timeout=10)
            assert starting in done, "start() waits for the commit's fate"
            with pytest.raises(DatabaseUnavailableError):
                await starting
            await eventually(bodies, lambda n: n == 2, what="T1 running again", timeout=20)
            # start() did not wait for the re-run, and nothing of the run exists before it
            # commits (the lost commit did not land).
            assert await listed() == []
        finally:
            probe.hold.set()
        (found,) = await eventually(listed, lambda runs: len(runs) == 1, what="the run")
        run_id = found.id
        run = await engine.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    lost = outages(caplog)
    assert len(lost) == 1, lost
    assert "step write" in lost[0], "not in the first step's commit"
    assert probe.attempts == [1, 1]
    assert steps_of(await engine.history(run_id), "T1") == [(EventKind.STEP_SUCCEEDED, 1)]
    assert await business(engine, probe, run_id) == [("T1", "0"), ("T3", "t")]
