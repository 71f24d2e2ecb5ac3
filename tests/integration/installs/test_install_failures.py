"""Installs that fail: refused by the device (undone), or past undoing (FAILED, for an operator)."""

from __future__ import annotations

from cloudphone.domain import Role
from cloudphone.saga.testing import FaultInjector
from tests.support.apk_builder import build_apk_bytes
from tests.support.apps_http import post_apk
from tests.support.installs_stack import Installs, packages, user


async def test_an_apk_the_device_refuses_is_undone_at_once(installs: Installs, unique: str) -> None:
    """A minimum SDK above the device's: ``INSTALL_FAILED_OLDER_SDK``, undone, nothing left."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.future"
    device = await installs.device(ann)
    posted = await post_apk(installs.http, ann, build_apk_bytes(package=package, min_sdk=99))
    assert (await installs.saga(ann, posted.json()["saga_id"]))["status"] == "COMPLETED"

    started = await installs.install(ann, device, posted.json()["application"])
    run = await installs.saga(ann, started.json()["saga_id"])
    assert run["status"] == "COMPENSATED", run
    assert run["error"]["step"] == "PUSH_AND_INSTALL"
    assert "INSTALL_FAILED_OLDER_SDK" in run["error"]["message"]
    history = await installs.platform.engine.history(run["id"])
    assert sum(e.step == "PUSH_AND_INSTALL" and e.kind.value == "step_failed" for e in history) == 1
    assert await installs.listing(ann, device) == []
    assert installs.spool_files() == []
    assert await packages(device, package) == ""


async def test_an_upgrade_past_undoing_waits_for_an_operator(
    installs: Installs, faults: FaultInjector, unique: str
) -> None:
    """The device took v2 but every answer was lost: v1 cannot come back, the run FAILED.

    The listing says FAILED and further installs are refused naming the run; once an operator
    resolved it, a new install takes the row over and records what the device has.
    """
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    v1, v2 = [await installs.app(ann, package, v) for v in (1, 2)]
    await installs.installed(ann, device, v1)
    attempts = installs.platform.settings.devices.retry_max_attempts

    def lost(_ctx: object) -> None:
        raise ConnectionError("the device's answer was lost")

    faults.add("PUSH_AND_INSTALL", lost, when="after", times=attempts, saga="app_install")
    started = await installs.install(ann, device, v2)
    saga_id = started.json()["saga_id"]
    run = await installs.saga(ann, saga_id)
    assert run["status"] == "FAILED", run
    assert "the earlier APK is not on the device" in run["error"]["message"]
    assert await packages(device, package) == f"package:{package} versionCode:2\n"
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["version_code"], row["previous_version_code"]) == ("FAILED", 2, 1)

    refused = await installs.install(ann, device, v2)
    assert refused.status_code == 409, refused.text
    assert saga_id in refused.json()["error"]["message"]
    assert "operator" in refused.json()["error"]["message"]

    admin = user("ops", Role.ADMIN)
    resolved = await installs.http.post(
        f"/sagas/{saga_id}/resolve", json={"note": "v2 is on the device"}, headers=admin
    )
    assert resolved.status_code == 200, resolved.text
    [row] = await installs.listing(ann, device)
    assert row["status"] == "FAILED"  # still not known until someone acts on the row
    await installs.installed(ann, device, v2)
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["version_code"], row["previous_version_code"]) == (
        "INSTALLED",
        2,
        None,
    )
