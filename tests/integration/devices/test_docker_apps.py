"""App installs on the docker runtime: adb-shell against a container's adbd (the agent image)."""

from __future__ import annotations

import os
from pathlib import Path

import aiodocker
import pytest

from cloudphone.devices.installer import (
    INSTALL_FAILED_VERSION_DOWNGRADE,
    INSTALL_PARSE_FAILED_NOT_APK,
    UninstallResult,
)
from cloudphone.devices.runtimes.base import Container, PermanentRuntimeError
from cloudphone.devices.runtimes.docker import DockerRuntime
from tests.support.devices_apps import PACKAGE, REMOTE_APK, make_apk, peak_rss, start_device
from tests.support.devices_docker import PrivateDockerd, adb_runtime, agent_image, dockerd
from tests.support.devices_stack import SMALL

__all__ = ["adb_runtime", "agent_image", "dockerd"]  # fixtures used below

BIG = 105 * 1024 * 1024


@pytest.fixture
async def device(adb_runtime: DockerRuntime, unique: str) -> Container:
    """A running device container, initialised over ADB (boot_completed, serial, wm)."""
    return await start_device(adb_runtime, f"cloudphone-dapps-{unique}", f"dserial-{unique}")


async def host_pid(daemon: PrivateDockerd, name: str) -> int:
    """The host pid of the container's main process (the agent)."""
    async with aiodocker.Docker(url=daemon.url) as client:
        data = await client.containers.container(name).show()
    pid: int = data["State"]["Pid"]
    return pid


async def test_install_upgrade_downgrade_and_uninstall_in_a_container(
    adb_runtime: DockerRuntime, device: Container, tmp_path: Path
) -> None:
    """The whole install life cycle over the container's adbd, with Android's answers."""
    async with adb_runtime.adb_session(device) as phone:
        await phone.push(make_apk(tmp_path, 3), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
        assert await phone.list_packages() == {PACKAGE: 3}

        await phone.push(make_apk(tmp_path, 5), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
        await phone.push(make_apk(tmp_path, 4), REMOTE_APK)
        refused = await phone.install(REMOTE_APK)
        assert (refused.code, refused.permanent) == (INSTALL_FAILED_VERSION_DOWNGRADE, True)
        assert await phone.list_packages(PACKAGE) == {PACKAGE: 5}
        assert (await phone.install(REMOTE_APK, allow_downgrade=True)).ok
        assert await phone.list_packages(PACKAGE) == {PACKAGE: 4}

        corrupt = tmp_path / "corrupt.apk"
        corrupt.write_bytes(os.urandom(5000))
        await phone.push(corrupt, REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).code == INSTALL_PARSE_FAILED_NOT_APK
        await phone.remove(REMOTE_APK)

        assert await phone.uninstall(PACKAGE) is UninstallResult.REMOVED
        assert await phone.uninstall(PACKAGE) is UninstallResult.NOT_INSTALLED
        assert await phone.list_packages() == {}


async def test_installs_survive_a_container_restart(
    adb_runtime: DockerRuntime, device: Container, tmp_path: Path, unique: str
) -> None:
    """A docker stop and start: the container's /data keeps the installed package."""
    async with adb_runtime.adb_session(device) as phone:
        await phone.push(make_apk(tmp_path, 9), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
    assert await adb_runtime.stop(device.name)
    restarted = await adb_runtime.start(device.name)
    await adb_runtime.initialize(restarted, f"dserial-{unique}", SMALL, timeout=20)
    async with adb_runtime.adb_session(restarted) as phone:
        assert await phone.list_packages() == {PACKAGE: 9}


@pytest.mark.timeout(240)
async def test_a_large_push_into_a_container_streams(
    adb_runtime: DockerRuntime, device: Container, dockerd: PrivateDockerd, tmp_path: Path
) -> None:
    """A 105 MiB APK pushed into a 256 MiB container: installed, the agent's RSS barely moves."""
    pid = await host_pid(dockerd, device.name)
    async with adb_runtime.adb_session(device) as phone:
        await phone.push(make_apk(tmp_path, 1), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
        baseline = peak_rss(pid)
        await phone.push(make_apk(tmp_path, 2, big_asset_size=BIG), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
        assert await phone.list_packages(PACKAGE) == {PACKAGE: 2}
    growth = peak_rss(pid) - baseline
    assert growth < 24 * 1024 * 1024, f"the agent's peak RSS grew by {growth >> 20} MiB"


async def test_the_line_protocol_image_has_no_adb_session(
    dockerd: PrivateDockerd, unique: str
) -> None:
    """The busybox image cannot install apps: a clear permanent error, not a hang."""
    runtime = DockerRuntime(dockerd.options(f"line-{unique}"))
    container = Container("c", "id", True, "running", {}, "127.0.0.1", 1, 2)
    with pytest.raises(PermanentRuntimeError, match="no adbd"):
        runtime.adb_session(container)
    await runtime.close()
