"""The suite's leak check: runs left active on the shared database are retired for good."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudphone.saga import SagaEngine, SagaStatus
from tests.conftest import ENGINE_DEFAULTS
from tests.support.leaks import active_runs, check_shared
from tests.support.sagas import Recorder, build_saga

pytestmark = pytest.mark.postgres


async def test_a_left_run_is_named_retired_and_never_claimed(
    postgres_url: str, unique: str
) -> None:
    """Only the shared type is reported; both are retired, fenced, and no worker runs them."""
    shared, own = Recorder(), Recorder()
    sagas = [build_saga(f"shared_{unique[::-1]}", shared), build_saga(f"own_{unique}", own)]
    engine = SagaEngine(postgres_url, sagas, worker_id=f"w-{unique}", **ENGINE_DEFAULTS)
    try:
        await check(engine, postgres_url, unique, sagas[0].name, sagas[1].name)
    finally:
        await engine.close()
    assert own.calls == ["A", "B", "C"]
    assert shared.calls == []


async def check(engine: SagaEngine, url: str, unique: str, shared: str, own: str) -> None:
    """Leave a run of each type, check, and run a worker over the database."""
    await engine.create_schema()
    left_shared = await engine.start(shared, {})
    left_own = await engine.start(own, {})
    assert {r.id for r in active_runs(url)} >= {left_shared, left_own}

    reported = check_shared(url, "the test", unique)

    assert [r.id for r in reported] == [left_shared]
    assert "PENDING" in str(reported[0])
    assert active_runs(url) == []
    for run_id in (left_shared, left_own):
        run = await engine.get(run_id)
        assert run.status is SagaStatus.FAILED
        assert run.resolution == "left active by the test; retired by the test suite"
    async with engine.worker():
        done = await engine.start(own, {})
        assert (await engine.wait(done, timeout=timedelta(seconds=10))).status.is_terminal
