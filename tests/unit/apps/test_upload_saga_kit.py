"""The upload saga's compensation paths on the test kit: no engine database, a manual clock.

Whatever fails before MARK_AVAILABLE (the pivot), or when the deadline passes first, the
upload is undone: the record FAILED with a reason, no object, no spooled file. Crashes around
the pivot end with exactly one AVAILABLE record and its object.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudphone.apps.models import Application, AppStatus
from cloudphone.apps.storage.base import StorageUnavailableError
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaRun, SagaStatus, StepContext
from cloudphone.saga.testing import Boundary, MemoryEngine
from tests.support.apps_harness import Apps, apk

PACKAGE = "com.example.kit"


def kit(apps: Apps) -> MemoryEngine:
    assert isinstance(apps.engine, MemoryEngine)
    return apps.engine


async def upload(apps: Apps, user: Principal) -> tuple[str, str]:
    """Upload version 1 of the package; returns (saga id, application id)."""
    accepted = await apps.upload(user, apk(PACKAGE, 1))
    return accepted.saga_id, accepted.application.id


async def assert_undone(apps: Apps, run: SagaRun, app_id: str) -> Application:
    """The record FAILED with a reason, no object, no spooled file."""
    assert run.status in (SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT)
    app = await apps.record(app_id)
    assert app is not None
    assert (app.status, app.is_latest) == (AppStatus.FAILED, False)
    assert app.failure_reason
    assert await apps.objects() == []
    assert apps.spooled() == []
    return app


async def assert_available(apps: Apps, run: SagaRun, app_id: str) -> None:
    """One AVAILABLE record whose object holds the upload, and nothing else."""
    assert run.status is SagaStatus.COMPLETED
    (app,) = await apps.records(PACKAGE)
    assert (app.id, app.status) == (app_id, AppStatus.AVAILABLE)
    (stored,) = await apps.objects()
    assert (stored.key, stored.size) == (app.object_key, app.size)
    assert apps.spooled() == []


async def test_an_upload_becomes_available(apps: Apps, uploader: Principal) -> None:
    async with kit(apps).worker():
        saga_id, app_id = await upload(apps, uploader)
        run = await apps.engine.wait(saga_id, timeout=timedelta(seconds=10))
    await assert_available(apps, run, app_id)


@pytest.mark.parametrize("step", ["CREATE_APP_RECORD", "UPLOAD_TO_STORAGE", "MARK_AVAILABLE"])
async def test_a_step_before_or_at_the_pivot_failing_for_good_undoes_the_upload(
    apps: Apps, uploader: Principal, step: str
) -> None:
    engine = kit(apps)
    engine.faults.fail(step, times=None, error=StorageUnavailableError("store is down"))
    async with engine.worker():
        saga_id, app_id = await upload(apps, uploader)
        await engine.advance(timedelta(minutes=1))  # 1 s, 2 s, 4 s between the 4 attempts
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert engine.faults.attempts(step) == 4
    app = await assert_undone(apps, run, app_id)
    assert f"failed in {step}: store is down" in (app.failure_reason or "")


async def test_an_object_written_by_a_failed_attempt_is_removed(
    apps: Apps, uploader: Principal
) -> None:
    """The store took the object, then the attempt failed (answer lost): the undo deletes it."""
    engine = kit(apps)
    seen: list[int] = []

    def lose_the_answer(ctx: StepContext) -> None:
        seen.append(ctx.attempt)
        raise StorageUnavailableError("the answer was lost")

    engine.faults.add("UPLOAD_TO_STORAGE", lose_the_answer, when="after", times=None)
    async with engine.worker():
        saga_id, app_id = await upload(apps, uploader)
        await engine.settle()
        assert len(await apps.objects()) == 1, "the first attempt stored nothing"
        await engine.advance(timedelta(minutes=1))
        run = await engine.get(saga_id)
    assert seen == [1, 2, 3, 4]
    await assert_undone(apps, run, app_id)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_crash_at_the_pivot_is_taken_over_and_published_once(
    apps: Apps, uploader: Principal, when: Boundary
) -> None:
    engine = kit(apps)
    engine.crash_at("MARK_AVAILABLE", when)
    async with engine.worker():
        saga_id, app_id = await upload(apps, uploader)
        await engine.settle()
        stuck = await apps.record(app_id)
        assert stuck is not None
        assert stuck.status is AppStatus.UPLOADING, "a crashed transaction committed"
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    await assert_available(apps, run, app_id)
    assert engine.faults.attempts("MARK_AVAILABLE") == 2
    kinds = [e.kind for e in await apps.engine.history(saga_id)]
    assert kinds.count(EventKind.LEASE_TAKEOVER) == 1


async def test_a_crash_after_storing_stores_again_under_the_same_key(
    apps: Apps, uploader: Principal
) -> None:
    engine = kit(apps)
    engine.crash_at("UPLOAD_TO_STORAGE", "after")
    async with engine.worker():
        saga_id, app_id = await upload(apps, uploader)
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert engine.faults.attempts("UPLOAD_TO_STORAGE") == 2
    await assert_available(apps, run, app_id)


async def test_the_deadline_passing_mid_upload_undoes_it(apps: Apps, uploader: Principal) -> None:
    engine = kit(apps)
    engine.faults.hang("UPLOAD_TO_STORAGE", times=None)  # each attempt until its 5-min timeout
    async with engine.worker():
        saga_id, app_id = await upload(apps, uploader)
        await engine.advance(timedelta(minutes=9))
        assert (await engine.get(saga_id)).status is SagaStatus.RUNNING
        await engine.advance(timedelta(minutes=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.TIMED_OUT
    assert engine.faults.attempts("UPLOAD_TO_STORAGE") == 2, "cut by the timeout, then the deadline"
    app = await assert_undone(apps, run, app_id)
    assert "timed_out in UPLOAD_TO_STORAGE" in (app.failure_reason or "")
