"""Crash recovery with real worker processes killed by SIGKILL, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.saga import EventKind, SagaEngine, SagaEvent, SagaStatus
from tests.support.chaos import (
    Gate,
    build_chaos_saga,
    count_effects,
    create_chaos_schema,
    effect_writers,
)
from tests.support.worker_proc import WorkerPool

pytestmark = pytest.mark.chaos


@pytest.fixture
def saga_name(unique: str) -> str:
    return f"chaos_{unique}"


@pytest.fixture
def workers(database_url: str, saga_name: str, tmp_path: Path) -> Iterator[WorkerPool]:
    """Worker children on the test database; every one still running is SIGKILLed at the end."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pool = WorkerPool(database_url, saga_name, log_dir, lease_ms=1000, concurrency=4)
    yield pool
    pool.close()


@pytest.fixture
async def engine(make_engine: Callable[..., SagaEngine], saga_name: str, unique: str) -> SagaEngine:
    """The test's own engine (no worker): starts runs and reads them."""
    engine = make_engine([build_chaos_saga(saga_name)], worker_id=f"starter-{unique}")
    await create_chaos_schema(engine.db)
    return engine


def assert_contiguous(events: list[SagaEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def succeeded(events: list[SagaEvent]) -> list[tuple[str | None, int | None]]:
    return [(e.step, e.attempt) for e in events if e.kind is EventKind.STEP_SUCCEEDED]


def takeovers(events: list[SagaEvent]) -> list[SagaEvent]:
    return [e for e in events if e.kind is EventKind.LEASE_TAKEOVER]


async def test_killed_worker_is_taken_over_by_another_after_its_lease(
    engine: SagaEngine, workers: WorkerPool, unique: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed mid-transaction is taken over after its lease; each effect once.

    CALL's success rides with RECORD's transaction, so the kill loses both: the run is still
    at CALL, which the next owner runs again (as attempt 2, the same idempotency key), then
    RECORD as attempt 1 (its first attempt left nothing behind).
    """
    gate = Gate.in_dir(tmp_path, "RECORD")
    first = await workers.start(f"a-{unique}")
    saga_id = await engine.start(workers.saga_name, gate.data())

    assert await gate.wait_started() == {"worker_id": first.worker_id, "attempt": 1}
    held = await engine.get(saga_id)
    assert (held.owner, held.current_step) == (first.worker_id, "CALL")
    assert held.lease_expires_at is not None
    # Killed with RECORD's row inserted but not committed.
    assert first.kill() == -signal.SIGKILL
    gate.release()

    second = await workers.start(f"b-{unique}")
    run = await engine.wait(saga_id, timeout=timedelta(seconds=20))

    assert run.status is SagaStatus.COMPLETED, workers.logs()
    assert run.owner is None
    events = await engine.history(saga_id)
    assert_contiguous(events)
    (takeover,) = takeovers(events)
    assert (takeover.step, takeover.attempt) == ("CALL", 2)
    assert takeover.detail == {"previous_owner": first.worker_id, "worker": second.worker_id}
    assert takeover.at >= held.lease_expires_at, "taken over before the lease expired"
    assert succeeded(events) == [("RESERVE", 1), ("CALL", 2), ("RECORD", 1), ("NOTIFY", 1)]
    assert run.data["call_key"] == f"{saga_id}:CALL", "CALL ran again with its own key"
    assert await count_effects(engine.db, [saga_id]) == Counter(
        {(saga_id, "RESERVE"): 1, (saga_id, "RECORD"): 1}
    )
    # The dead worker's RECORD row was rolled back; the survivor's is the one that counts.
    assert await effect_writers(engine.db, saga_id) == {
        "RESERVE": [first.worker_id],
        "RECORD": [second.worker_id],
    }


async def test_restarted_worker_takes_its_own_runs_back_at_once(
    engine: SagaEngine, workers: WorkerPool, unique: str, tmp_path: Path
) -> None:
    """A worker restarting with the same id reclaims its runs without waiting for the lease."""
    lease_ms = 20_000
    worker_id = f"same-{unique}"
    gate = Gate.in_dir(tmp_path, "CALL")
    first = await workers.start(worker_id, lease_ms=lease_ms)
    saga_id = await engine.start(workers.saga_name, gate.data())

    await gate.wait_started()
    held = await engine.get(saga_id)
    assert (held.owner, held.current_step) == (worker_id, "CALL")
    assert held.lease_expires_at is not None
    assert first.kill() == -signal.SIGKILL
    gate.release()

    await workers.start(worker_id, lease_ms=lease_ms)
    run = await engine.wait(saga_id, timeout=timedelta(seconds=15))

    assert run.status is SagaStatus.COMPLETED, workers.logs()
    assert run.finished_at is not None
    # Finished with most of the dead process's 20 s lease still to run.
    assert run.finished_at + timedelta(seconds=10) < held.lease_expires_at
    events = await engine.history(saga_id)
    assert_contiguous(events)
    (takeover,) = takeovers(events)
    assert (takeover.step, takeover.attempt) == ("CALL", 2)
    assert takeover.detail == {"previous_owner": worker_id, "worker": worker_id}
    assert succeeded(events) == [("RESERVE", 1), ("CALL", 2), ("RECORD", 1), ("NOTIFY", 1)]
    assert await count_effects(engine.db, [saga_id]) == Counter(
        {(saga_id, "RESERVE"): 1, (saga_id, "RECORD"): 1}
    )


async def test_crash_between_transactional_action_and_commit_writes_the_row_once(
    engine: SagaEngine, workers: WorkerPool, unique: str
) -> None:
    """Killed after a transactional step's action, before its commit: on recovery one row.

    The commit would have carried CALL's success too: CALL runs again, then RECORD.
    """
    crasher = await workers.start(f"crash-{unique}", crash_after=["RECORD"])
    saga_id = await engine.start(workers.saga_name, {})

    assert await asyncio.to_thread(crasher.wait_exit, 20) == -signal.SIGKILL
    crashed = await engine.get(saga_id)
    assert (crashed.status, crashed.current_step) == (SagaStatus.RUNNING, "CALL")
    assert crashed.owner == crasher.worker_id
    assert await count_effects(engine.db, [saga_id]) == Counter({(saga_id, "RESERVE"): 1})

    recovery = await workers.start(f"recover-{unique}")
    run = await engine.wait(saga_id, timeout=timedelta(seconds=20))

    assert run.status is SagaStatus.COMPLETED, workers.logs()
    events = await engine.history(saga_id)
    assert_contiguous(events)
    assert [(e.step, e.attempt) for e in takeovers(events)] == [("CALL", 2)]
    assert succeeded(events) == [("RESERVE", 1), ("CALL", 2), ("RECORD", 1), ("NOTIFY", 1)]
    assert await count_effects(engine.db, [saga_id]) == Counter(
        {(saga_id, "RESERVE"): 1, (saga_id, "RECORD"): 1}
    )
    assert await effect_writers(engine.db, saga_id) == {
        "RESERVE": [crasher.worker_id],
        "RECORD": [recovery.worker_id],
    }
    assert run.data["RECORD"] == recovery.worker_id


async def test_stalled_worker_is_fenced_when_it_resumes(
    engine: SagaEngine, workers: WorkerPool, unique: str, tmp_path: Path
) -> None:
    """A worker frozen mid-step past its lease is taken over; on resuming it writes nothing."""
    # On SQLite a process frozen inside a write transaction blocks every writer, so nobody could
    # take over until it resumes: freeze it in the non-transactional step there.
    step = "RECORD" if engine.db.is_postgres else "CALL"
    gate = Gate.in_dir(tmp_path, step)
    stalled = await workers.start(f"stall-{unique}")
    saga_id = await engine.start(workers.saga_name, gate.data())
    await gate.wait_started()
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        gate.release()
        survivor = await workers.start(f"survivor-{unique}")
        run = await engine.wait(saga_id, timeout=timedelta(seconds=20))
        assert run.status is SagaStatus.COMPLETED, workers.logs()
        before = await engine.history(saga_id)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    # A graceful stop lets the resumed attempt run to its (fenced) commit before exiting.
    os.kill(stalled.pid, signal.SIGTERM)
    assert await asyncio.to_thread(stalled.wait_exit, 20) == 0, stalled.log()

    assert await engine.history(saga_id) == before
    assert_contiguous(before)
    (takeover,) = takeovers(before)
    assert takeover.detail == {"previous_owner": stalled.worker_id, "worker": survivor.worker_id}
    assert await engine.get(saga_id) == run
    assert await effect_writers(engine.db, saga_id) == {
        "RESERVE": [stalled.worker_id],
        "RECORD": [survivor.worker_id],
    }
