"""PostgreSQL LISTEN/NOTIFY: idle workers wake for new runs instead of waiting for a poll."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cloudphone.saga import NonRetryableError, SagaEngine, SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga
from tests.support.waiting import eventually


@pytest.fixture
async def engines(postgres_url: str, unique: str) -> AsyncIterator[tuple[SagaEngine, SagaEngine]]:
    saga = build_saga(f"notify_{unique}", Recorder())
    # Polls only every 30 s: anything faster than that came from a notification.
    worker = SagaEngine(
        postgres_url, [saga], worker_id=f"idle-{unique}", poll_interval=timedelta(seconds=30)
    )
    starter = SagaEngine(postgres_url, [saga], worker_id=f"starter-{unique}")
    await worker.create_schema()
    yield worker, starter
    await starter.close()
    await worker.close()


async def test_new_run_wakes_an_idle_worker(engines: tuple[SagaEngine, SagaEngine]) -> None:
    """A run started by another process is picked up at once by a worker idle on LISTEN."""
    worker, starter = engines
    saga_type = next(iter(worker.sagas))
    async with worker.worker(concurrency=2):
        listener = worker._listener
        assert listener is not None
        await eventually(lambda: _connected(listener), bool, what="LISTEN connection")
        began = time.monotonic()
        saga_id = await starter.start(saga_type, {})
        run = await worker.wait(saga_id, timeout=timedelta(seconds=10))
        elapsed = time.monotonic() - began
    assert run.status is SagaStatus.COMPLETED
    assert elapsed < 5, f"took {elapsed:.1f}s: the worker was not woken by NOTIFY"


async def test_operator_retry_wakes_an_idle_worker(postgres_url: str, unique: str) -> None:
    """An operator's retry from another process is announced: the idle worker resumes at once."""
    saga = build_saga(f"notifyretry_{unique}", Recorder(), steps=("P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=1, error=NonRetryableError("needs a fix"))
    worker = SagaEngine(
        postgres_url,
        [saga],
        worker_id=f"idle-{unique}",
        hooks=faults,
        poll_interval=timedelta(seconds=30),
    )
    operator = SagaEngine(postgres_url, [saga], worker_id=f"ops-{unique}")
    await worker.create_schema()
    try:
        async with worker.worker(concurrency=2):
            saga_id = await worker.start(saga.name, {})
            assert (
                await worker.wait(saga_id, timeout=timedelta(seconds=10))
            ).status is SagaStatus.FAILED
            listener = worker._listener
            assert listener is not None
            await eventually(lambda: _connected(listener), bool, what="LISTEN connection")
            began = time.monotonic()
            await operator.retry(saga_id)
            run = await worker.wait(saga_id, timeout=timedelta(seconds=10))
            elapsed = time.monotonic() - began
    finally:
        await operator.close()
        await worker.close()
    assert run.status is SagaStatus.COMPLETED
    assert elapsed < 5, f"took {elapsed:.1f}s: the worker was not woken by NOTIFY"


async def _connected(listener: object) -> bool:
    return bool(getattr(listener, "connected").is_set())  # noqa: B009 - typed as object here
