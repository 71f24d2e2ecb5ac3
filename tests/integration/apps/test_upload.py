"""app_upload end to end through the use case: object and record agree, latest is right."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cloudphone.apps.models import AppStatus
from cloudphone.apps.storage.base import LocalFile, PresignedUrl
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import SagaStatus
from tests.support.apps_harness import ADMIN, Apps, MakeApps, apk, fetch_bytes, sha256


async def object_bytes(apps: Apps, app_id: str, principal: Principal) -> bytes:
    """Download an application's object the way a client would."""
    _app, target = await apps.service.download(principal, app_id)
    if isinstance(target, LocalFile):
        return target.path.read_bytes()
    assert isinstance(target, PresignedUrl)
    return await fetch_bytes(target.url)


async def test_upload_stores_an_object_that_agrees_with_its_record(
    apps: Apps, user: Principal, package: str
) -> None:
    data = apk(package, 7, version_name="7.0", permissions=["android.permission.INTERNET"])
    accepted = await apps.upload(user, data, description="first build")
    assert accepted.created
    assert accepted.application.status is AppStatus.UPLOADING
    run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPLETED, run.error
    app = await apps.record(accepted.application.id)
    assert app is not None
    assert (app.status, app.package_name) == (AppStatus.AVAILABLE, package)
    assert (app.published_at, app.published_by, app.is_latest) == (None, None, False)  # private
    assert (app.version_code, app.version_name, app.label) == (7, "7.0", f"{package} v7")
    assert (app.min_sdk, app.target_sdk) == (21, 34)
    assert app.permissions == ("android.permission.INTERNET",)
    assert (app.size, app.sha256) == (len(data), sha256(data))
    assert (app.uploaded_by, app.description, app.saga_id) == (user.user_id, "first build", run.id)
    assert app.object_key == f"apps/{package}/7/{run.id}.apk"
    stored = await apps.storage.stat(app.object_key)
    assert stored is not None
    assert stored.size == app.size
    assert sha256(await object_bytes(apps, app.id, user)) == app.sha256
    assert apps.spooled() == []  # the temp file went with the saga


async def test_latest_is_the_highest_published_version_after_1_3_2(
    apps: Apps, user: Principal, package: str
) -> None:
    for version in (1, 3, 2):
        run, app = await apps.upload_and_wait(user, apk(package, version))
        assert run.status is SagaStatus.COMPLETED
        assert app is not None
        await apps.service.publish_app(ADMIN, app.id)
    records = await apps.records(package)
    assert [(r.version_code, r.is_latest) for r in records] == [(1, False), (2, False), (3, True)]
    latest = await apps.service.list_apps(user, package_name=package, latest_only=True)
    assert [a.version_code for a in latest] == [3]


async def test_concurrent_publishes_of_one_package_leave_exactly_one_latest(
    apps: Apps, user: Principal, package: str
) -> None:
    accepted = await asyncio.gather(*(apps.upload(user, apk(package, v)) for v in range(1, 7)))
    runs = await asyncio.gather(
        *(apps.engine.wait(a.saga_id, timeout=timedelta(seconds=30)) for a in accepted)
    )
    assert {r.status for r in runs} == {SagaStatus.COMPLETED}
    await asyncio.gather(*(apps.service.publish_app(ADMIN, a.application.id) for a in accepted))
    records = await apps.records(package)
    assert [r.version_code for r in records if r.is_latest] == [6]


async def test_duplicate_version_is_refused_before_anything_is_stored(
    apps: Apps, user: Principal, package: str
) -> None:
    await apps.upload_and_wait(user, apk(package, 5))
    objects, runs = await apps.objects(), await apps.run_count()
    with pytest.raises(ConflictError) as refused:
        await apps.upload(user, apk(package, 5, label="again"))
    assert refused.value.code == "duplicate_version"
    assert package in refused.value.message
    assert (await apps.objects(), await apps.run_count()) == (objects, runs)
    assert apps.spooled() == []


async def test_a_duplicate_of_a_version_still_uploading_is_refused_at_once(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    """The record is written with the run, so even before a worker runs it, 409."""
    apps = await make_apps()  # no worker: the first upload stays PENDING
    first = await apps.upload(user, apk(package, 2))
    assert (await apps.service.get_app(user, first.application.id)).status is AppStatus.UPLOADING
    with pytest.raises(ConflictError):
        await apps.upload(user, apk(package, 2))
    assert await apps.run_count() == 1
    assert len(apps.spooled()) == 1  # only the first upload's file


async def test_concurrent_duplicates_get_one_202_and_409s(
    apps: Apps, user: Principal, package: str
) -> None:
    """The partial unique index backs the check when requests race past it together."""
    results = await asyncio.gather(
        *(apps.upload(user, apk(package, 8, label=f"copy {i}")) for i in range(5)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 1, results
    assert all(isinstance(r, ConflictError) for r in refused), refused
    assert await apps.run_count() == 1


async def test_a_failed_version_can_be_uploaded_again(
    apps: Apps, user: Principal, package: str
) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 4))
    assert app is not None
    await apps.service.delete_app(ADMIN, app.id)
    again, app2 = await apps.upload_and_wait(user, apk(package, 4))
    assert again.status is SagaStatus.COMPLETED
    assert app2 is not None
    assert app2.status is AppStatus.AVAILABLE
    assert app2.id != app.id


async def test_idempotency_key_returns_the_first_upload_without_reading_the_body(
    apps: Apps, user: Principal, package: str
) -> None:
    first = await apps.upload(user, apk(package, 1), idempotency_key=f"{user.user_id}:k1")
    await apps.engine.wait(first.saga_id, timeout=timedelta(seconds=30))
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(b"x")
        yield apk(package, 1)

    again = await apps.service.upload_app(user, body(), idempotency_key=f"{user.user_id}:k1")
    assert (again.saga_id, again.created, read) == (first.saga_id, False, [])
    assert again.application.status is AppStatus.AVAILABLE
