"""A rolling upgrade with runs in flight, with real worker processes on SQLite and PostgreSQL.

Process A is the old deploy (version 1 only), B the new one (versions 1 and 2). Runs start on
v1, B starts, new runs start on v2, and A is stopped mid-run (SIGTERM, or SIGKILL). Every v1
run must finish on v1's steps, every new run on v2's; a run of a version no live worker has
shows as orphaned until a worker with it starts.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.saga import EventKind, SagaEngine, SagaEvent, SagaStatus
from tests.support.sagas import build_versioned
from tests.support.versions_worker import VERSION_STEPS, VersionedWorkers
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos

WORK_MS = 300
"""Each step's time, so that runs are in flight when A stops."""


@pytest.fixture
def saga_name(unique: str) -> str:
    return f"upgrade_{unique}"


@pytest.fixture
def workers(database_url: str, saga_name: str, tmp_path: Path) -> Iterator[VersionedWorkers]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pool = VersionedWorkers(database_url, saga_name, log_dir)
    yield pool
    pool.close()


def engine_of(make_engine: Callable[..., SagaEngine], name: str, *versions: int) -> SagaEngine:
    """An engine without a worker that knows these versions (it starts runs on the newest)."""
    return make_engine([build_versioned(name, v, VERSION_STEPS[v]) for v in versions])


def done_by(events: list[SagaEvent]) -> list[tuple[str | None, str]]:
    """(step, worker) of each successful step."""
    return [(e.step, e.detail["worker"]) for e in events if e.kind is EventKind.STEP_SUCCEEDED]


async def mid_run_on(engine: SagaEngine, ids: list[str], worker_id: str) -> str:
    """Wait until ``worker_id`` drives one of the runs in its second step; returns it."""

    async def probe() -> str | None:
        for run_id in ids:
            run = await engine.get(run_id)
            steps = done_by(await engine.history(run_id))
            if run.owner == worker_id and run.status is SagaStatus.RUNNING and len(steps) == 1:
                return run_id
        return None

    found = await eventually(probe, bool, timeout=20, what=f"a run mid-way on {worker_id}")
    assert found is not None
    return found


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_a_rolling_upgrade_finishes_every_run_on_the_version_it_started_on(
    make_engine: Callable[..., SagaEngine],
    workers: VersionedWorkers,
    saga_name: str,
    unique: str,
    stop: str,
) -> None:
    old_api, new_api = engine_of(make_engine, saga_name, 1), engine_of(make_engine, saga_name, 1, 2)
    await old_api.create_schema()
    a = await workers.start(f"a-{unique}", versions=["1"])
    v1_runs = [await old_api.start(saga_name, {"work_ms": WORK_MS}) for _ in range(8)]
    b = await workers.start(f"b-{unique}", versions=["1", "2"])
    v2_runs = [await new_api.start(saga_name, {"work_ms": WORK_MS}) for _ in range(4)]
    interrupted = await mid_run_on(old_api, v1_runs, a.worker_id)
    if stop == "sigterm":
        assert await a.terminate() == 0
    else:
        assert a.kill() == -signal.SIGKILL

    runs = await asyncio.gather(
        *(new_api.wait(i, timeout=timedelta(seconds=60)) for i in v1_runs + v2_runs)
    )
    assert all(r.status is SagaStatus.COMPLETED for r in runs), workers.logs()
    assert [r.saga_version for r in runs] == [1] * 8 + [2] * 4
    for run in runs:
        history = await new_api.history(run.id)
        steps = VERSION_STEPS[run.saga_version]
        assert [step for step, _ in done_by(history)] == list(steps), run.id
        assert {run.data[step] for step in steps} == {f"v{run.saga_version}"}, run.data
    assert {w for r in runs[8:] for _, w in done_by(await new_api.history(r.id))} == {b.worker_id}
    # The run A was driving when it stopped: begun by A, finished by B, all on v1.
    handed = {w for _, w in done_by(await new_api.history(interrupted))}
    assert handed == {a.worker_id, b.worker_id}, handed
    assert await new_api.list(saga_type=saga_name, orphaned=True) == []


async def test_a_run_of_a_version_no_live_worker_has_is_orphaned_until_one_starts(
    make_engine: Callable[..., SagaEngine],
    workers: VersionedWorkers,
    saga_name: str,
    unique: str,
) -> None:
    api, older = engine_of(make_engine, saga_name, 3), engine_of(make_engine, saga_name, 1, 2)
    await api.create_schema()
    await workers.start(f"b-{unique}", versions=["1", "2"])
    waiting = await api.start(saga_name, {})
    # B claims (and finishes) a v2 run started after the v3 one, and leaves the v3 one alone.
    passing = await older.start(saga_name, {})
    assert (await older.wait(passing, timeout=timedelta(seconds=20))).status is SagaStatus.COMPLETED
    untouched = await api.get(waiting)
    assert (untouched.status, untouched.owner, untouched.epoch) == (SagaStatus.PENDING, None, 1)
    assert [r.id for r in await api.list(saga_type=saga_name, orphaned=True)] == [waiting]
    counts = await api.store.count_orphaned()
    assert counts.get((saga_name, 3)) == 1

    c = await workers.start(f"c-{unique}", versions=["3"])
    run = await api.wait(waiting, timeout=timedelta(seconds=20))
    assert run.status is SagaStatus.COMPLETED
    assert {w for _, w in done_by(await api.history(waiting))} == {c.worker_id}
    assert await api.list(saga_type=saga_name, orphaned=True) == []
    assert (saga_name, 3) not in await api.store.count_orphaned()
