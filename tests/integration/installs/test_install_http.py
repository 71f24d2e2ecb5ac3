"""Installing, upgrading and uninstalling over the API; the device answers over real ADB."""

from __future__ import annotations

from tests.support.installs_stack import Installs, packages, user


async def test_installed_app_is_listed_by_the_device_and_the_platform(
    installs: Installs, unique: str
) -> None:
    """202 INSTALLING, then INSTALLED; ``pm list packages`` on the device shows its version."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    app = await installs.app(ann, package, 3)

    posted = await installs.install(ann, device, app)
    assert posted.status_code == 202, posted.text
    accepted = posted.json()
    assert accepted["installation"]["status"] == "INSTALLING"
    assert accepted["installation"]["version_code"] == 3
    run = await installs.saga(ann, accepted["saga_id"])
    assert run["status"] == "COMPLETED", run

    assert await packages(device, package) == f"package:{package} versionCode:3\n"
    [row] = await installs.listing(ann, device)
    assert (row["package_name"], row["status"], row["version_code"], row["version_name"]) == (
        package,
        "INSTALLED",
        3,
        "3.0",
    )
    assert row["app_id"] == app["id"]
    assert row["installed_at"] is not None
    assert installs.spool_files() == []


async def test_upgrade_then_a_lower_version_is_refused_unless_asked_for(
    installs: Installs, unique: str
) -> None:
    """v3 → v5 upgrades; v4 is 409 ``downgrade`` with nothing reserved; allowed, v4 installs."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    v3, v4, v5 = [await installs.app(ann, package, v) for v in (3, 4, 5)]
    await installs.installed(ann, device, v3)

    posted = await installs.install(ann, device, v5)
    assert posted.json()["installation"]["previous_version_code"] == 3
    assert (await installs.saga(ann, posted.json()["saga_id"]))["status"] == "COMPLETED"
    assert await packages(device, package) == f"package:{package} versionCode:5\n"
    [row] = await installs.listing(ann, device)
    assert (row["version_code"], row["app_id"], row["previous_version_code"]) == (5, v5["id"], None)

    runs_before = len(await installs.runs("app_install", f"ann-{unique}"))
    refused = await installs.install(ann, device, v4)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "downgrade"
    assert "5 is installed" in error["message"]
    assert "allow_downgrade" in error["message"]
    assert await installs.listing(ann, device) == [row]
    assert len(await installs.runs("app_install", f"ann-{unique}")) == runs_before

    await installs.installed(ann, device, v4, allow_downgrade=True)
    assert await packages(device, package) == f"package:{package} versionCode:4\n"
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["version_code"]) == ("INSTALLED", 4)


async def test_uninstall_removes_the_app_and_its_row(installs: Installs, unique: str) -> None:
    """DELETE → 202 ``app_uninstall``; then the device has no package and the listing is empty."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    await installs.installed(ann, device, await installs.app(ann, package, 2))

    deleted = await installs.http.delete(f"/devices/{device['id']}/apps/{package}", headers=ann)
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["installation"]["status"] == "UNINSTALLING"
    run = await installs.saga(ann, deleted.json()["saga_id"])
    assert (run["saga_type"], run["status"]) == ("app_uninstall", "COMPLETED")

    assert await packages(device, package) == ""
    assert await installs.listing(ann, device) == []
    again = await installs.http.delete(f"/devices/{device['id']}/apps/{package}", headers=ann)
    assert again.status_code == 404, again.text


async def test_the_same_idempotency_key_answers_the_first_run(
    installs: Installs, unique: str
) -> None:
    """Repeat: 200 with the same saga, one run; the key with another app: 409, nothing new."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    v1, v2 = [await installs.app(ann, package, v) for v in (1, 2)]

    first = await installs.install(ann, device, v1, key=f"k-{unique}")
    assert first.status_code == 202, first.text
    await installs.saga(ann, first.json()["saga_id"])
    again = await installs.install(ann, device, v1, key=f"k-{unique}")
    assert again.status_code == 200, again.text
    assert again.json()["saga_id"] == first.json()["saga_id"]
    assert again.json()["installation"]["status"] == "INSTALLED"

    other = await installs.install(ann, device, v2, key=f"k-{unique}")
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert [r.id for r in await installs.runs("app_install", f"ann-{unique}")] == [
        first.json()["saga_id"]
    ]
    assert await packages(device, package) == f"package:{package} versionCode:1\n"


async def test_deleting_the_device_drops_its_installations(installs: Installs, unique: str) -> None:
    """After ``device_delete`` the device lists no applications (its rows went with it)."""
    ann = user(f"ann-{unique}")
    device = await installs.device(ann)
    await installs.installed(ann, device, await installs.app(ann, f"com.t{unique}.a", 1))

    deleted = await installs.http.delete(f"/devices/{device['id']}", headers=ann)
    assert deleted.status_code == 202, deleted.text
    assert (await installs.saga(ann, deleted.json()["saga_id"]))["status"] == "COMPLETED"
    assert await installs.listing(ann, device) == []


async def test_deleting_the_application_leaves_installed_copies(
    installs: Installs, unique: str
) -> None:
    """The upload deleted from the platform: the device keeps its copy, the row stays."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    app = await installs.app(ann, package, 7)
    await installs.installed(ann, device, app)

    gone = await installs.http.delete(f"/apps/{app['id']}", headers=ann)
    assert gone.status_code == 200, gone.text
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["app_id"]) == ("INSTALLED", app["id"])
    assert await packages(device, package) == f"package:{package} versionCode:7\n"
    again = await installs.install(ann, device, app)
    assert again.status_code == 404, again.text  # but it cannot be installed again
