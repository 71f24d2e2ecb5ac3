"""Deleting an application: object first, record after, latest moves down, safe to repeat."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cloudphone.apps.models import AppStatus, applications
from cloudphone.domain import ConflictError, ForbiddenError, NotFoundError, Principal
from tests.support.apps_harness import ADMIN, Apps, MakeApps, apk


async def test_deleting_the_latest_moves_latest_to_the_next_version(
    apps: Apps, user: Principal, package: str
) -> None:
    for version in (1, 2, 3):
        _run, app = await apps.upload_and_wait(user, apk(package, version))
        assert app is not None
        await apps.service.publish_app(ADMIN, app.id)
    v3 = (await apps.records(package))[-1]
    deleted = await apps.service.delete_app(ADMIN, v3.id)
    assert deleted.status is AppStatus.DELETED
    assert await apps.storage.stat(v3.object_key) is None
    records = await apps.records(package)
    assert [(r.version_code, r.status, r.is_latest) for r in records] == [
        (1, AppStatus.AVAILABLE, False),
        (2, AppStatus.AVAILABLE, True),
        (3, AppStatus.DELETED, False),
    ]
    with pytest.raises(NotFoundError):
        await apps.service.get_app(user, v3.id)
    with pytest.raises(NotFoundError):
        await apps.service.delete_app(ADMIN, v3.id)


async def test_only_the_uploader_and_admins_delete(
    apps: Apps, user: Principal, package: str
) -> None:
    """A stranger cannot tell a private upload exists, nor delete one from the catalog."""
    stranger = Principal(f"stranger-{package}")
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    with pytest.raises(NotFoundError):
        await apps.service.delete_app(stranger, app.id)
    await apps.service.publish_app(ADMIN, app.id)
    with pytest.raises(ForbiddenError):
        await apps.service.delete_app(stranger, app.id)
    with pytest.raises(ConflictError) as published:
        await apps.service.delete_app(user, app.id)
    assert published.value.code == "published"
    assert (await apps.storage.stat(app.object_key)) is not None
    await apps.service.unpublish_app(ADMIN, app.id)
    assert (await apps.service.delete_app(user, app.id)).status is AppStatus.DELETED
    assert (await apps.storage.stat(app.object_key)) is None


async def test_a_crashed_delete_is_finished_by_repeating_it(
    apps: Apps, user: Principal, package: str
) -> None:
    """A delete that stopped after hiding the record leaves DELETING, never a dangling live one."""
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    async with apps.db.begin() as conn:  # what a crash right after the first commit leaves
        await conn.execute(
            sa.update(applications)
            .where(applications.c.id == app.id)
            .values(status=AppStatus.DELETING.value, is_latest=False)
        )
    assert (await apps.service.delete_app(ADMIN, app.id)).status is AppStatus.DELETED
    assert await apps.storage.stat(app.object_key) is None


async def test_an_upload_in_progress_cannot_be_deleted(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    apps = await make_apps()
    accepted = await apps.upload(user, apk(package, 1))  # no worker: the saga stays PENDING
    with pytest.raises(ConflictError) as refused:
        await apps.service.delete_app(ADMIN, accepted.application.id)
    assert refused.value.code == "upload_in_progress"


async def test_download_of_a_deleted_or_unknown_app_is_refused(
    apps: Apps, user: Principal, package: str
) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    await apps.service.delete_app(ADMIN, app.id)
    with pytest.raises(ConflictError):
        await apps.service.download(ADMIN, app.id)
    with pytest.raises(NotFoundError):
        await apps.service.download(user, "no-such-id")
