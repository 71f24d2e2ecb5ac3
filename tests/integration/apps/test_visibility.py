"""Who sees what: an upload is its uploader's (and admins') until an admin publishes it."""

from __future__ import annotations

import pytest

from cloudphone.apps.models import AppStatus
from cloudphone.domain import NotFoundError, Principal
from cloudphone.saga.testing import FaultInjector
from tests.support.apps_harness import ADMIN, Apps, MakeApps, apk


async def test_failed_uploads_are_visible_to_their_uploader_and_admins_only(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    faults = FaultInjector()
    faults.fail("UPLOAD_TO_STORAGE", times=None)
    apps = await make_apps(hooks=faults)
    stranger = Principal(f"stranger-{package}")
    async with apps.engine.worker():
        _run, failed = await apps.upload_and_wait(user, apk(package, 1))
    assert failed is not None
    assert failed.status is AppStatus.FAILED
    assert (await apps.service.get_app(user, failed.id)).id == failed.id
    assert (await apps.service.get_app(ADMIN, failed.id)).id == failed.id
    with pytest.raises(NotFoundError):
        await apps.service.get_app(stranger, failed.id)
    assert await apps.service.list_apps(stranger, package_name=package) == []
    mine = await apps.service.list_apps(user, package_name=package)
    assert [a.id for a in mine] == [failed.id]
    only_failed = await apps.service.list_apps(
        ADMIN, package_name=package, statuses=[AppStatus.FAILED]
    )
    assert [a.id for a in only_failed] == [failed.id]


async def test_available_uploads_are_private_until_an_admin_publishes_them(
    apps: Apps, user: Principal, package: str
) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    assert app.status is AppStatus.AVAILABLE
    stranger = Principal(f"stranger-{package}")
    assert await apps.service.list_apps(stranger, package_name=package) == []
    for read in (apps.service.get_app, apps.service.download):
        with pytest.raises(NotFoundError):
            await read(stranger, app.id)
    published = await apps.service.publish_app(ADMIN, app.id)
    assert (published.in_catalog, published.published_by) == (True, ADMIN.user_id)
    assert [a.id for a in await apps.service.list_apps(stranger, package_name=package)] == [app.id]
    _app, target = await apps.service.download(stranger, app.id)
    assert target is not None
    await apps.service.unpublish_app(ADMIN, app.id)
    with pytest.raises(NotFoundError):
        await apps.service.get_app(stranger, app.id)


async def test_deleted_records_are_hidden_from_their_uploader_but_not_from_admins(
    apps: Apps, user: Principal, package: str
) -> None:
    _run, app = await apps.upload_and_wait(user, apk(package, 1))
    assert app is not None
    assert (await apps.service.delete_app(user, app.id)).status is AppStatus.DELETED
    with pytest.raises(NotFoundError):
        await apps.service.get_app(user, app.id)
    assert await apps.service.list_apps(user, package_name=package) == []
    assert (await apps.service.get_app(ADMIN, app.id)).status is AppStatus.DELETED
    deleted = await apps.service.list_apps(
        ADMIN, package_name=package, statuses=[AppStatus.DELETED]
    )
    assert [a.id for a in deleted] == [app.id]
