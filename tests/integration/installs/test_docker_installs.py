"""The install sagas on the docker runtime: adb-shell to a container's adbd (the agent image).

The platform as ``platform.py`` builds it, given a docker runtime on the test's private daemon
(its bind mounts are a test's: the image runs this source tree), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from cloudphone.devices.runtimes.docker import DockerRuntime
from tests.support.devices_docker import adb_runtime, agent_image, dockerd
from tests.support.installs_stack import install_settings, started, user

__all__ = ["adb_runtime", "agent_image", "dockerd"]  # fixtures used below


async def test_install_upgrade_and_uninstall_on_a_container(
    installs_url: str, adb_runtime: DockerRuntime, tmp_path: Path, unique: str
) -> None:
    """device_create, app_upload, app_install twice (upgrade), app_uninstall: over its adbd."""
    ann, package = user(f"ann-{unique}"), f"com.t{unique}.notes"
    settings = install_settings(installs_url, tmp_path / "var", f"w-{unique}")
    async with started(settings, device_runtime=adb_runtime) as installs:
        device = await installs.device(ann)
        for version in (2, 3):
            await installs.installed(ann, device, await installs.app(ann, package, version))
        [row] = await installs.listing(ann, device)
        assert (row["status"], row["version_code"]) == ("INSTALLED", 3)
        [container] = await adb_runtime.list()  # this test's runtime: the device's container
        async with adb_runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {package: 3}

        removal = await installs.http.delete(f"/devices/{device['id']}/apps/{package}", headers=ann)
        assert removal.status_code == 202, removal.text
        run = await installs.saga(ann, removal.json()["saga_id"])
        assert run["status"] == "COMPLETED", run
        async with adb_runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {}
        assert await installs.listing(ann, device) == []
