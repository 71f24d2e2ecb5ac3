"""The install sagas on the docker runtime: adb-shell to a container's adbd (the agent image).

The platform as ``platform.py`` builds it, given a docker runtime on the test's private daemon
(its bind mounts are a test's: the image runs this source tree), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.devices.runtimes.docker import DockerRuntime
from tests.support.devices_agent_image import agent_binds, build_agent_image
from tests.support.devices_docker import PrivateDockerd, dockerd
from tests.support.devices_stack import remove_all
from tests.support.installs_stack import install_settings, started, user

__all__ = ["dockerd"]  # a fixture used below


@pytest.fixture(scope="session")
def agent_image(dockerd: PrivateDockerd) -> str:
    """The image running the project's device agent (imported once per session)."""
    return build_agent_image(dockerd.url)


@pytest.fixture
async def runtime(
    dockerd: PrivateDockerd, agent_image: str, unique: str
) -> AsyncIterator[DockerRuntime]:
    """A docker runtime that speaks ADB to its containers, as to Redroid."""
    options = dockerd.options(
        f"inst-{unique}", image=agent_image, protocol="adb", binds=agent_binds()
    )
    docker = DockerRuntime(options)
    yield docker
    await remove_all(docker)
    await docker.close()


async def test_install_upgrade_and_uninstall_on_a_container(
    installs_url: str, runtime: DockerRuntime, tmp_path: Path, unique: str
) -> None:
    """device_create, app_upload, app_install twice (upgrade), app_uninstall: over its adbd."""
    ann, package = user(f"ann-{unique}"), f"com.t{unique}.notes"
    settings = install_settings(installs_url, tmp_path / "var", f"w-{unique}")
    async with started(settings, device_runtime=runtime) as installs:
        device = await installs.device(ann)
        for version in (2, 3):
            await installs.installed(ann, device, await installs.app(ann, package, version))
        [row] = await installs.listing(ann, device)
        assert (row["status"], row["version_code"]) == ("INSTALLED", 3)
        [container] = await runtime.list()  # this test's runtime: the device's container
        async with runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {package: 3}

        removal = await installs.http.delete(f"/devices/{device['id']}/apps/{package}", headers=ann)
        assert removal.status_code == 202, removal.text
        run = await installs.saga(ann, removal.json()["saga_id"])
        assert run["status"] == "COMPLETED", run
        async with runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {}
        assert await installs.listing(ann, device) == []
