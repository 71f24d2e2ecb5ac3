"""Installing APKs on local devices over real ADB: adb-shell against the agent's adbd."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adb_shell.adb_device_async import AdbDeviceTcpAsync

from cloudphone.devices.installer import (
    INSTALL_FAILED_ALREADY_EXISTS,
    INSTALL_FAILED_INVALID_URI,
    INSTALL_FAILED_OLDER_SDK,
    INSTALL_FAILED_VERSION_DOWNGRADE,
    INSTALL_PARSE_FAILED_NOT_APK,
    AppInstaller,
    PushError,
    UninstallResult,
)
from cloudphone.devices.runtimes.base import Container
from cloudphone.devices.runtimes.local import LocalRuntime
from tests.support.devices_apps import PACKAGE, REMOTE_APK, make_apk, peak_rss, sha256, start_device
from tests.support.devices_stack import SMALL

BIG = 110 * 1024 * 1024


@pytest.fixture
async def device(runtime: LocalRuntime, unique: str) -> Container:
    """A running local device."""
    return await start_device(runtime, f"cloudphone-apps-{unique}", f"serial-{unique}")


@pytest.fixture
async def phone(runtime: LocalRuntime, device: Container) -> AsyncIterator[AppInstaller]:
    """An ADB session to it."""
    async with runtime.adb_session(device) as session:
        yield session


async def adb_shell(device: Container, command: str) -> str:
    """What a user's ``adb shell COMMAND`` prints (a connection of its own)."""
    assert device.adb_port is not None
    client = AdbDeviceTcpAsync(device.adb_host, device.adb_port, banner="test")
    await client.connect(read_timeout_s=5)
    try:
        return str(await client.shell(command, read_timeout_s=10))
    finally:
        await client.close()


async def test_pushed_apk_installs_and_is_listed_with_its_version(
    phone: AppInstaller, device: Container, tmp_path: Path
) -> None:
    """Pushed, installed, then ``pm list packages --show-versioncode`` shows it with its version."""
    apk = make_apk(tmp_path, 3)
    progress: list[tuple[int, int]] = []
    await phone.push(apk, REMOTE_APK, lambda sent, total: progress.append((sent, total)))
    assert progress[-1] == (apk.stat().st_size, apk.stat().st_size)

    result = await phone.install(REMOTE_APK)
    assert (result.ok, result.code) == (True, None)
    assert await phone.list_packages() == {PACKAGE: 3}
    listing = await adb_shell(device, "pm list packages --show-versioncode notes")
    assert listing == f"package:{PACKAGE} versionCode:3\n"
    assert await adb_shell(device, "pm list packages other.filter") == ""

    await phone.remove(REMOTE_APK)
    assert (
        await adb_shell(device, f"rm {REMOTE_APK}")
        == f"rm: {REMOTE_APK}: No such file or directory\n"
    )
    assert await phone.list_packages() == {PACKAGE: 3}  # the installed copy stays


async def test_pushed_bytes_come_back_identical(device: Container, tmp_path: Path) -> None:
    """SEND then RECV over the sync service: same bytes, mode and size (STAT) on the device."""
    assert device.adb_port is not None
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(300_000))
    client = AdbDeviceTcpAsync(device.adb_host, device.adb_port, banner="test")
    await client.connect(read_timeout_s=5)
    try:
        await client.push(
            str(source), "/sdcard/Download/blob.bin", st_mode=0o100600, mtime=1_600_000_000
        )
        mode, size, mtime = await client.stat("/sdcard/Download/blob.bin")
        assert (oct(mode), size, mtime) == ("0o100600", 300_000, 1_600_000_000)
        await client.pull("/sdcard/Download/blob.bin", str(tmp_path / "back.bin"))
        assert await client.stat("/sdcard/Download/missing") == (0, 0, 0)
    finally:
        await client.close()
    assert sha256(tmp_path / "back.bin") == sha256(source)


async def test_upgrade_then_downgrade_refused_unless_allowed(
    phone: AppInstaller, tmp_path: Path
) -> None:
    """v3 → v5 upgrades; v4 is a refused downgrade (nothing changes) unless -d; -R refuses."""
    for version in (3, 5):
        await phone.push(make_apk(tmp_path, version), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
    assert await phone.list_packages(PACKAGE) == {PACKAGE: 5}

    await phone.push(make_apk(tmp_path, 4), REMOTE_APK)
    refused = await phone.install(REMOTE_APK)
    assert (refused.ok, refused.code, refused.permanent) == (
        False,
        INSTALL_FAILED_VERSION_DOWNGRADE,
        True,
    )
    assert "Update version code 4 is older than current 5" in refused.message
    assert await phone.list_packages(PACKAGE) == {PACKAGE: 5}

    no_replace = await phone.install(REMOTE_APK, replace=False, allow_downgrade=True)
    assert no_replace.code == INSTALL_FAILED_ALREADY_EXISTS
    assert (await phone.install(REMOTE_APK, allow_downgrade=True)).ok
    assert await phone.list_packages(PACKAGE) == {PACKAGE: 4}


async def test_uninstall_then_not_installed(
    phone: AppInstaller, device: Container, tmp_path: Path
) -> None:
    """Uninstalling removes it; a second one is Android's "not installed" answer, not an error."""
    await phone.push(make_apk(tmp_path, 1), REMOTE_APK)
    assert (await phone.install(REMOTE_APK)).ok
    assert await phone.uninstall(PACKAGE) is UninstallResult.REMOVED
    assert await phone.list_packages() == {}
    assert await adb_shell(device, f"pm uninstall {PACKAGE}") == "Failure [not installed for 0]\n"
    assert await phone.uninstall(PACKAGE) is UninstallResult.NOT_INSTALLED


async def test_refusals_name_their_cause(phone: AppInstaller, tmp_path: Path) -> None:
    """A corrupt file, a too-high minSdk and a missing file: Android's codes; nothing installed."""
    corrupt = tmp_path / "corrupt.apk"
    corrupt.write_bytes(b"PK\x03\x04" + os.urandom(4000))
    await phone.push(corrupt, REMOTE_APK)
    result = await phone.install(REMOTE_APK)
    assert (result.code, result.permanent) == (INSTALL_PARSE_FAILED_NOT_APK, True)

    await phone.push(make_apk(tmp_path, 1, min_sdk=34), REMOTE_APK)  # the device is Android 13
    result = await phone.install(REMOTE_APK)
    assert result.code == INSTALL_FAILED_OLDER_SDK
    assert "Requires newer sdk version #34 (current version is #33)" in result.message

    result = await phone.install("/data/local/tmp/never-pushed.apk")
    assert (result.code, result.permanent) == (INSTALL_FAILED_INVALID_URI, False)
    assert await phone.list_packages() == {}


async def test_a_push_outside_the_writable_places_is_refused(
    phone: AppInstaller, tmp_path: Path
) -> None:
    """/system is read-only for the shell user: the sync FAIL is a PushError."""
    with pytest.raises(PushError, match="Permission denied"):
        await phone.push(make_apk(tmp_path, 1), "/system/app/evil.apk")


async def test_installed_apps_survive_an_agent_restart(
    runtime: LocalRuntime, device: Container, tmp_path: Path, unique: str
) -> None:
    """Stop and start the device (a new agent process): the package is still installed."""
    async with runtime.adb_session(device) as phone:
        await phone.push(make_apk(tmp_path, 7), REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
    before = {p.pid for p in runtime.scan()}
    assert await runtime.stop(device.name)
    restarted = await runtime.start(device.name)
    await runtime.initialize(restarted, f"serial-{unique}", SMALL, timeout=20)
    assert {p.pid for p in runtime.scan()}.isdisjoint(before)
    async with runtime.adb_session(restarted) as phone:
        assert await phone.list_packages() == {PACKAGE: 7}


@pytest.mark.timeout(240)
async def test_a_large_push_streams_without_growing_the_agent(
    runtime: LocalRuntime, device: Container, tmp_path: Path
) -> None:
    """A 110 MiB APK is pushed and installed; the agent's peak RSS grows by far less than that."""
    (agent,) = runtime.scan()
    async with runtime.adb_session(device) as phone:
        await phone.push(make_apk(tmp_path, 1), REMOTE_APK)  # warm up: the code paths loaded
        assert (await phone.install(REMOTE_APK)).ok
        baseline = peak_rss(agent.pid)
        big = make_apk(tmp_path, 2, big_asset_size=BIG)
        await phone.push(big, REMOTE_APK)
        assert (await phone.install(REMOTE_APK)).ok
        assert await phone.list_packages(PACKAGE) == {PACKAGE: 2}
    growth = peak_rss(agent.pid) - baseline
    assert growth < 24 * 1024 * 1024, f"the agent's peak RSS grew by {growth >> 20} MiB"


async def test_streams_interleave_on_one_connection(
    device: Container, tmp_path: Path, unique: str
) -> None:
    """A push and shell commands at once on one adb-shell connection: each gets its answer."""
    assert device.adb_port is not None
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024))
    client = AdbDeviceTcpAsync(device.adb_host, device.adb_port, banner="test")
    await client.connect(read_timeout_s=5)
    try:
        _, serial, sdk = await asyncio.gather(
            client.push(str(blob), "/data/local/tmp/blob.bin", read_timeout_s=20),
            client.shell("getprop ro.serialno", read_timeout_s=20),
            client.shell("getprop ro.build.version.sdk", read_timeout_s=20),
        )
        assert (serial, sdk) == (f"serial-{unique}\n", "33\n")
        assert (await client.stat("/data/local/tmp/blob.bin"))[1] == 3 * 1024 * 1024
    finally:
        await client.close()
