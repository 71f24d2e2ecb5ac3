"""wait() on a run this process finishes answers the run as stored, without reading it back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cloudphone.saga import NonRetryableError, SagaEngine, SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga


@pytest.mark.parametrize(
    ("fail", "status"),
    [
        ((), SagaStatus.COMPLETED),
        ((("C", False),), SagaStatus.COMPENSATED),
        ((("C", False), ("B", True)), SagaStatus.FAILED),
    ],
)
async def test_waited_run_equals_the_stored_run(
    make_engine: Callable[..., SagaEngine],
    unique: str,
    fail: tuple[tuple[str, bool], ...],
    status: SagaStatus,
) -> None:
    """Completed, compensated and failed runs: every field wait() answers is what get() reads."""
    saga = build_saga(f"wait_{unique}", Recorder(), transactional=("A", "C"))
    faults = FaultInjector()
    for step, compensating in fail:
        faults.fail(step, times=None, error=NonRetryableError("stop"), compensating=compensating)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker(concurrency=4):
        saga_id = await engine.start(
            saga.name, {"n": 1}, idempotency_key=f"key-{unique}", started_by="u-1"
        )
        waited = await engine.wait(saga_id, timeout=timedelta(seconds=10))
        stored = await engine.get(saga_id)

    assert waited.status is status
    assert waited.finished_at is not None
    assert waited.owner is None
    assert waited.last_seq == len(await engine.history(saga_id))
    assert waited == stored
