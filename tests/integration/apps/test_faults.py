"""Storage failures before the pivot undo the upload: no AVAILABLE record, no object, no file."""

from __future__ import annotations

from datetime import timedelta

from cloudphone.apps.models import AppStatus
from cloudphone.apps.storage.base import StorageUnavailableError
from cloudphone.domain import Principal
from cloudphone.saga import SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.support.apps_harness import MakeApps, apk


async def test_storage_failing_for_good_compensates(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    faults = FaultInjector()
    faults.fail("UPLOAD_TO_STORAGE", times=None, error=StorageUnavailableError("store is down"))
    apps = await make_apps(hooks=faults)
    async with apps.engine.worker():
        run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert run.status is SagaStatus.COMPENSATED
    assert faults.attempts("UPLOAD_TO_STORAGE") == 4
    assert app is not None
    assert app.status is AppStatus.FAILED
    assert app.failure_reason is not None
    assert "store is down" in app.failure_reason
    assert not app.is_latest
    assert await apps.objects() == []
    assert apps.spooled() == []


async def test_a_transient_storage_failure_is_retried(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    faults = FaultInjector()
    faults.fail("UPLOAD_TO_STORAGE", times=2, error=StorageUnavailableError("blip"))
    apps = await make_apps(hooks=faults)
    async with apps.engine.worker():
        run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert run.status is SagaStatus.COMPLETED
    assert faults.attempts("UPLOAD_TO_STORAGE") == 3
    assert app is not None
    assert app.status is AppStatus.AVAILABLE


async def test_a_failure_after_the_object_was_written_removes_it(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    """MARK_AVAILABLE is the pivot: if it fails for good, the stored object is deleted."""
    faults = FaultInjector()
    faults.fail("MARK_AVAILABLE", times=None)
    apps = await make_apps(hooks=faults)
    async with apps.engine.worker():
        run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert run.status is SagaStatus.COMPENSATED
    assert app is not None
    assert app.status is AppStatus.FAILED
    assert await apps.objects() == []
    assert apps.spooled() == []


async def test_the_deadline_undoes_a_hanging_upload(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    faults = FaultInjector()
    faults.hang("UPLOAD_TO_STORAGE", times=None)
    apps = await make_apps(hooks=faults, deadline=timedelta(seconds=1))
    async with apps.engine.worker():
        run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert run.status is SagaStatus.TIMED_OUT
    assert app is not None
    assert app.status is AppStatus.FAILED
    assert await apps.objects() == []
    assert apps.spooled() == []


async def test_a_missing_spool_file_compensates_with_a_clear_reason(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    apps = await make_apps()
    accepted = await apps.upload(user, apk(package, 1))
    for name in apps.spooled():  # a worker on another host would not see the file
        apps.spool.remove(name)
    async with apps.engine.worker():
        run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPENSATED
    app = await apps.record(accepted.application.id)
    assert app is not None
    assert app.failure_reason is not None
    assert "temp directory" in app.failure_reason
