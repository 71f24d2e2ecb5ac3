"""Reconcile finds objects without a live record and records without an object, and fixes them."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa

from cloudphone.apps.keys import object_key
from cloudphone.apps.models import AppStatus, applications
from cloudphone.domain import Principal
from tests.support.apps_harness import ADMIN, Apps, MakeApps, apk


async def put_object(apps: Apps, key: str, tmp_path: Path, data: bytes = b"orphan") -> None:
    source = tmp_path / f"src-{uuid.uuid4().hex}"
    source.write_bytes(data)
    await apps.storage.put_file(key, source, size=len(data))


async def test_after_normal_uploads_there_is_nothing_to_reconcile(
    apps: Apps, user: Principal, package: str
) -> None:
    for version in (1, 2):
        await apps.upload_and_wait(user, apk(package, version))
    report = await apps.reconciler.run(fix=True, package_name=package)
    assert report.clean, report


async def test_orphan_objects_are_listed_then_removed(
    apps: Apps, user: Principal, package: str, tmp_path: Path
) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    orphan = object_key(package, 9, str(uuid.uuid4()))  # no record, unknown saga
    await put_object(apps, orphan, tmp_path)
    report = await apps.reconciler.run(package_name=package)
    assert report.orphan_objects == [orphan]
    assert await apps.storage.stat(orphan) is not None  # listing changes nothing
    fixed = await apps.reconciler.run(fix=True, package_name=package)
    assert fixed.orphan_objects == [orphan]
    assert await apps.storage.stat(orphan) is None
    assert await apps.storage.stat(app.object_key) is not None
    assert (await apps.reconciler.run(package_name=package)).clean


async def test_records_without_an_object_are_marked_failed_and_latest_moves(
    apps: Apps, user: Principal, package: str
) -> None:
    for version in (1, 2):
        _run, app = await apps.upload_and_wait(user, apk(package, version))
        assert app is not None
        await apps.service.publish_app(ADMIN, app.id)
    v1, v2 = await apps.records(package)
    assert v2.is_latest
    await apps.storage.delete(v2.object_key)  # the object vanished behind our back
    report = await apps.reconciler.run(package_name=package)
    assert report.missing_objects == [v2.id]
    await apps.reconciler.run(fix=True, package_name=package)
    after = {r.id: r for r in await apps.records(package)}
    assert after[v2.id].status is AppStatus.FAILED
    assert not after[v2.id].is_latest
    assert after[v1.id].is_latest
    assert (await apps.reconciler.run(package_name=package)).clean


async def test_unfinished_deletions_are_finished(apps: Apps, user: Principal, package: str) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    async with apps.db.begin() as conn:
        await conn.execute(
            sa.update(applications)
            .where(applications.c.id == app.id)
            .values(status=AppStatus.DELETING.value, is_latest=False)
        )
    report = await apps.reconciler.run(fix=True, package_name=package)
    assert report.unfinished_deletions == [app.id]
    record = await apps.record(app.id)
    assert record is not None
    assert record.status is AppStatus.DELETED
    assert await apps.storage.stat(app.object_key) is None


async def test_objects_of_running_uploads_are_left_alone(
    make_apps: MakeApps, user: Principal, package: str, tmp_path: Path
) -> None:
    apps = await make_apps()
    accepted = await apps.upload(user, apk(package, 1))  # PENDING: no worker yet
    await put_object(apps, accepted.application.object_key, tmp_path)  # mid-UPLOAD_TO_STORAGE
    report = await apps.reconciler.run(fix=True, package_name=package)
    assert report.clean, report
    assert await apps.storage.stat(accepted.application.object_key) is not None


async def test_stalled_uploads_of_finished_sagas_are_failed(
    make_apps: MakeApps, user: Principal, package: str, tmp_path: Path
) -> None:
    apps = await make_apps()
    key = object_key(package, 3, str(uuid.uuid4()))
    await put_object(apps, key, tmp_path)
    app_id = str(uuid.uuid4())
    async with apps.db.begin() as conn:  # an UPLOADING record whose saga is gone
        now = sa.func.now()
        await conn.execute(
            sa.insert(applications).values(
                id=app_id,
                package_name=package,
                version_code=3,
                permissions=[],
                size=6,
                sha256="0" * 64,
                object_key=key,
                status=AppStatus.UPLOADING.value,
                is_latest=False,
                uploaded_by=user.user_id,
                saga_id=key.rsplit("/", 1)[1].removesuffix(".apk"),
                created_at=now,
                updated_at=now,
            )
        )
    report = await apps.reconciler.run(fix=True, package_name=package)
    assert report.stalled_uploads == [app_id]
    assert report.orphan_objects == []
    record = await apps.record(app_id)
    assert record is not None
    assert record.status is AppStatus.FAILED
    assert await apps.storage.stat(key) is None
