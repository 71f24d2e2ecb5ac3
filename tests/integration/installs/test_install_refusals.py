"""Installs refused at the request: a clear 4xx, and nothing reserved, started or installed."""

from __future__ import annotations

from typing import Any

from cloudphone.domain import Role
from cloudphone.saga.testing import FaultInjector
from tests.support.installs_stack import Installs, packages, user
from tests.support.waiting import eventually


async def assert_nothing_reserved(installs: Installs, who: str, device: Any) -> None:
    """No row on the device, no install run started by ``who``, no spool file."""
    admin = user("admin", Role.ADMIN)
    assert await installs.listing(admin, device) == []
    assert await installs.runs("app_install", who) == []
    assert installs.spool_files() == []


async def test_not_your_device_or_not_an_app_you_may_read(installs: Installs, unique: str) -> None:
    """Bob's device: 404 for Ann; Bob's private upload: 404 for Ann; an admin may do both."""
    ann, bob = f"ann-{unique}", f"bob-{unique}"
    ann_device = await installs.device(user(ann))
    bob_device = await installs.device(user(bob), "bobs")
    ann_app = await installs.app(user(ann), f"com.t{unique}.ann", 1)
    bob_app = await installs.app(user(bob), f"com.t{unique}.bob", 1)

    on_bobs = await installs.install(user(ann), bob_device, ann_app)
    assert on_bobs.status_code == 404, on_bobs.text
    assert f"no device {bob_device['id']}" in on_bobs.json()["error"]["message"]
    unreadable = await installs.install(user(ann), ann_device, bob_app)
    assert unreadable.status_code == 404, unreadable.text
    assert bob_app["id"] in unreadable.json()["error"]["message"]
    listing = await installs.http.get(f"/devices/{bob_device['id']}/apps", headers=user(ann))
    assert listing.status_code == 404, listing.text
    await assert_nothing_reserved(installs, ann, ann_device)
    await assert_nothing_reserved(installs, ann, bob_device)

    admin = user(f"admin-{unique}", Role.ADMIN)
    await installs.installed(admin, bob_device, ann_app)
    assert await packages(bob_device, "com.t") == f"package:com.t{unique}.ann versionCode:1\n"


async def test_a_stopped_device_is_refused(installs: Installs, unique: str) -> None:
    """STOPPED: 409 ``device_not_running`` for an install and an uninstall; nothing changes."""
    ann = f"ann-{unique}"
    package = f"com.t{unique}.notes"
    device = await installs.device(user(ann))
    v1, v2 = [await installs.app(user(ann), package, v) for v in (1, 2)]
    await installs.installed(user(ann), device, v1)
    [row] = await installs.listing(user(ann), device)
    stopped = await installs.http.post(f"/devices/{device['id']}/stop", headers=user(ann))
    assert stopped.json()["status"] == "STOPPED", stopped.text

    refused = await installs.install(user(ann), device, v2)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "device_not_running"
    assert "STOPPED" in refused.json()["error"]["message"]
    url = f"/devices/{device['id']}/apps/{package}"
    kept = await installs.http.delete(url, headers=user(ann))
    assert kept.status_code == 409, kept.text
    assert kept.json()["error"]["code"] == "device_not_running"
    assert await installs.listing(user(ann), device) == [row]
    assert len(await installs.runs("app_install", ann)) == 1
    assert await installs.runs("app_uninstall", ann) == []


async def test_bad_bodies_are_422(installs: Installs, unique: str) -> None:
    """No app_id, an unknown field, a non-boolean downgrade flag: 422, nothing started."""
    ann = f"ann-{unique}"
    device = await installs.device(user(ann))
    url = f"/devices/{device['id']}/apps"
    for body in ({}, {"app_id": "x", "force": True}, {"app_id": "x", "allow_downgrade": "maybe"}):
        answer = await installs.http.post(url, json=body, headers=user(ann))
        assert answer.status_code == 422, (body, answer.text)
    missing = await installs.install(user(ann), device, {"id": "no-such-app"})
    assert missing.status_code == 404, missing.text
    await assert_nothing_reserved(installs, ann, device)


async def test_one_install_at_a_time_per_package(
    installs: Installs, faults: FaultInjector, unique: str
) -> None:
    """While one install runs, a second (or an uninstall) is 409 naming it.

    Cancelled, it removes only its own reservation, and the package can be installed again.
    """
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    v1, v2 = [await installs.app(ann, package, v) for v in (1, 2)]
    faults.hang("FETCH_APK", saga="app_install")
    first = (await installs.install(ann, device, v1)).json()
    saga_id = first["saga_id"]

    second = await installs.install(ann, device, v2)
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "installation_busy"
    assert saga_id in second.json()["error"]["message"]
    removing = await installs.http.delete(f"/devices/{device['id']}/apps/{package}", headers=ann)
    assert removing.status_code == 409, removing.text
    assert saga_id in removing.json()["error"]["message"]
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["saga_id"], row["version_code"]) == ("INSTALLING", saga_id, 1)

    admin = user("ops", Role.ADMIN)
    await eventually(lambda: _fetching(installs, saga_id), bool, what="FETCH_APK hanging")
    cancelled = await installs.http.post(f"/sagas/{saga_id}/cancel", headers=admin, json={})
    assert cancelled.status_code in (200, 202), cancelled.text
    assert (await installs.saga(ann, saga_id))["status"] == "COMPENSATED"
    assert await installs.listing(ann, device) == []
    assert installs.spool_files() == []

    await installs.installed(ann, device, v2)
    assert await packages(device, package) == f"package:{package} versionCode:2\n"


async def _fetching(installs: Installs, saga_id: str) -> bool:
    run = await installs.platform.engine.get(saga_id)
    return run.current_step == "FETCH_APK" and run.status.value == "RUNNING"
