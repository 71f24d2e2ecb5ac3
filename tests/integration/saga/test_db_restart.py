"""A PostgreSQL restart under running sagas: everything recovers by itself, nothing is spent.

Runs on a private cluster (``tests.support.postgres_server``), never the shared server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.saga import EventKind, SagaEngine, SagaStatus
from cloudphone.saga.errors import DatabaseUnavailableError
from tests.support.chaos import (
    TRANSACTIONAL_STEPS,
    Gate,
    build_chaos_saga,
    count_effects,
    create_chaos_schema,
)
from tests.support.postgres_server import PostgresServer, private_postgres
from tests.support.sagas import Recorder, build_saga
from tests.support.waiting import eventually

pytestmark = pytest.mark.postgres

LEASE = timedelta(seconds=2)
FAST_POLL = timedelta(milliseconds=50)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    """One private cluster for the module; each test restarts it and has its own database."""
    with private_postgres() as server:
        yield server


@pytest.fixture(params=["asyncpg", "psycopg"])
def url(request: pytest.FixtureRequest, cluster: PostgresServer, unique: str) -> str:
    """A fresh database, through each driver (the fast path is asyncpg either way)."""
    cluster.create_database(f"restart_{unique}")
    return cluster.url(f"restart_{unique}", driver=request.param)


@pytest.fixture
async def engines() -> AsyncIterator[list[SagaEngine]]:
    """Closes the engines a test appends."""
    made: list[SagaEngine] = []
    yield made
    for engine in made:
        await engine.close()


async def statuses(engine: SagaEngine, ids: list[str]) -> Counter[SagaStatus]:
    return Counter([(await engine.get(saga_id)).status for saga_id in ids])


async def assert_nothing_spent(engine: SagaEngine, ids: list[str]) -> None:
    """Every step succeeded at its first attempt, once; no failure, no takeover."""
    for saga_id in ids:
        events = await engine.history(saga_id)
        kinds = Counter(e.kind for e in events)
        assert kinds[EventKind.STEP_FAILED] == 0, events
        assert kinds[EventKind.LEASE_TAKEOVER] == 0, events
        succeeded = [(e.step, e.attempt) for e in events if e.kind is EventKind.STEP_SUCCEEDED]
        assert sorted(succeeded) == sorted(
            (step, 1) for step in ("RESERVE", "CALL", "RECORD", "NOTIFY")
        )
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_sagas_under_load_finish_after_a_restart_without_spending_attempts(
    cluster: PostgresServer, url: str, unique: str, engines: list[SagaEngine]
) -> None:
    """Two workers, sagas in flight, 2.5 s of downtime (longer than the lease): all complete."""
    saga = build_chaos_saga(f"restart_{unique}")
    workers = [
        SagaEngine(url, [saga], worker_id=f"w{i}-{unique}", lease=LEASE, poll_interval=FAST_POLL)
        for i in range(2)
    ]
    starter = SagaEngine(url, [saga], worker_id=f"s-{unique}", lease=LEASE)
    engines += [*workers, starter]
    await create_chaos_schema(starter.db)
    async with workers[0].worker(concurrency=8), workers[1].worker(concurrency=8):
        ids = [await starter.start(saga.name, {"work_ms": 150}) for _ in range(40)]
        await eventually(
            lambda: statuses(starter, ids),
            lambda seen: seen[SagaStatus.COMPLETED] >= 2,
            what="the first sagas completed",
        )
        assert (await statuses(starter, ids))[SagaStatus.COMPLETED] < len(ids)

        await asyncio.to_thread(cluster.stop, "fast")
        with pytest.raises(DatabaseUnavailableError):
            await starter.start(saga.name, {"work_ms": 150})
        await asyncio.sleep(2.5)  # the outage itself: longer than a lease, on purpose
        await asyncio.to_thread(cluster.start)

        ids += [await starter.start(saga.name, {"work_ms": 150}) for _ in range(10)]
        await eventually(
            lambda: statuses(starter, ids),
            lambda seen: seen[SagaStatus.COMPLETED] == len(ids),
            timeout=40,
            what="every saga completed",
        )
    await assert_nothing_spent(starter, ids)
    effects = await count_effects(starter.db, ids)
    assert effects == Counter({(i, step): 1 for i in ids for step in TRANSACTIONAL_STEPS})


async def test_a_step_transaction_and_a_progress_write_lost_with_the_server_are_redone(
    cluster: PostgresServer, url: str, unique: str, engines: list[SagaEngine], tmp_path: Path
) -> None:
    """The server stops while RECORD's transaction is open and CALL is about to commit.

    RECORD's transaction rolled back: it runs again as attempt 1 and its row exists once.
    CALL's progress write is retried until the server is back; CALL is not called again.
    """
    saga = build_chaos_saga(f"inflight_{unique}")
    engine = SagaEngine(url, [saga], worker_id=f"w-{unique}", lease=LEASE, poll_interval=FAST_POLL)
    engines.append(engine)
    await create_chaos_schema(engine.db)
    record_gate = Gate.in_dir(tmp_path / "record", "RECORD")
    call_gate = Gate.in_dir(tmp_path / "call", "CALL")
    for gate in (record_gate, call_gate):
        gate.started.parent.mkdir()
    async with engine.worker(concurrency=4):
        # CALL's run first: RECORD's transaction, once open, holds up any step that joins
        # its step group (RESERVE of a run started after it got there).
        in_call = await engine.start(saga.name, call_gate.data())
        in_record = await engine.start(saga.name, record_gate.data())
        await record_gate.wait_started()
        await call_gate.wait_started()

        await asyncio.to_thread(cluster.stop, "fast")
        record_gate.started.unlink()
        record_gate.release()
        call_gate.release()
        await asyncio.sleep(1.0)  # the outage itself
        await asyncio.to_thread(cluster.start)

        for saga_id in (in_record, in_call):
            assert (
                await engine.wait(saga_id, timeout=timedelta(seconds=20))
            ).status is SagaStatus.COMPLETED
    rerun = await record_gate.wait_started()
    assert rerun["attempt"] == 1, "the lost transaction was counted as a failed attempt"
    await assert_nothing_spent(engine, [in_record, in_call])
    effects = await count_effects(engine.db, [in_record, in_call])
    assert effects == Counter(
        {(i, step): 1 for i in (in_record, in_call) for step in TRANSACTIONAL_STEPS}
    )


async def test_listen_wakes_an_idle_worker_again_after_a_restart(
    cluster: PostgresServer, url: str, unique: str, engines: list[SagaEngine]
) -> None:
    """The LISTEN connection comes back; a run announced around the restart is picked up."""
    saga = build_saga(f"listen_{unique}", Recorder())
    # Polls only every 30 s: anything faster than that came from LISTEN/NOTIFY.
    idle = SagaEngine(url, [saga], worker_id=f"idle-{unique}", poll_interval=timedelta(seconds=30))
    starter = SagaEngine(url, [saga], worker_id=f"s-{unique}")
    engines += [idle, starter]
    await idle.create_schema()
    async with idle.worker(concurrency=2):
        listener = idle._listener
        assert listener is not None
        await eventually(lambda: _listening(listener), bool, what="LISTEN connection")
        first = await starter.start(saga.name, {})
        assert (
            await idle.wait(first, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED

        await asyncio.to_thread(cluster.restart, "fast", 0.5)
        # Started as soon as the server answers, likely before the listener reconnected.
        around = await starter.start(saga.name, {})
        began = time.monotonic()
        assert (
            await idle.wait(around, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED
        assert time.monotonic() - began < 8, "the run announced around the restart was missed"

        await eventually(lambda: _listening(listener), bool, what="LISTEN connection again")
        after = await starter.start(saga.name, {})
        began = time.monotonic()
        assert (
            await idle.wait(after, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED
        assert time.monotonic() - began < 5, "NOTIFY no longer wakes the worker"


async def _listening(listener: object) -> bool:
    return bool(getattr(listener, "connected").is_set())  # noqa: B009 - typed as object here
