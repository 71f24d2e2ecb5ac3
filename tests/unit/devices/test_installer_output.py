"""Reading what Android's ``pm`` prints, sizing transfer deadlines, mapping device paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.devices.agent_files import DeviceFiles
from cloudphone.devices.installer import (
    INSTALL_FAILED_INVALID_URI,
    INSTALL_FAILED_OLDER_SDK,
    INSTALL_FAILED_VERSION_DOWNGRADE,
    INSTALL_PARSE_FAILED_NOT_APK,
    UNRECOGNISED_OUTPUT,
    PackageManagerError,
    TransferTimeouts,
    UninstallResult,
    parse_install_output,
    parse_package_list,
    parse_uninstall_output,
)

ANDROID_12_BAD_SDK = (
    "Exception occurred while executing 'install':\n"
    "java.lang.IllegalArgumentException: Error: Failed to parse APK file: /data/local/tmp/a.apk: "
    "Requires newer sdk version #33 (current version is #31)\n"
    "\tat com.android.server.pm.PackageManagerShellCommand.setParamsSize(...)\n"
)


@pytest.mark.parametrize(
    ("output", "ok", "code"),
    [
        ("Success\n", True, None),
        ("Performing Streamed Install\nSuccess\n", True, None),
        ("Failure [INSTALL_FAILED_VERSION_DOWNGRADE]\n", False, INSTALL_FAILED_VERSION_DOWNGRADE),
        (
            "Failure [INSTALL_FAILED_VERSION_DOWNGRADE: Downgrade detected: Update version code 1 "
            "is older than current 2]\n",
            False,
            INSTALL_FAILED_VERSION_DOWNGRADE,
        ),
        (
            "Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse]\n",
            False,
            INSTALL_PARSE_FAILED_NOT_APK,
        ),
        (ANDROID_12_BAD_SDK, False, INSTALL_FAILED_OLDER_SDK),
        (
            "Error: Failed to parse APK file: /data/local/tmp/a.apk\n"
            "Exception occurred while executing 'install':\n",
            False,
            INSTALL_PARSE_FAILED_NOT_APK,
        ),
        ("Error: Can't open file: /data/local/tmp/a.apk\n", False, INSTALL_FAILED_INVALID_URI),
        ("/system/bin/sh: pm: inaccessible or not found\n", False, UNRECOGNISED_OUTPUT),
        ("", False, UNRECOGNISED_OUTPUT),
    ],
)
def test_install_answers_of_every_android(output: str, ok: bool, code: str | None) -> None:
    result = parse_install_output(output)
    assert (result.ok, result.code) == (ok, code)


def test_only_failures_about_the_apk_are_permanent() -> None:
    assert parse_install_output("Failure [INSTALL_FAILED_OLDER_SDK]").permanent
    assert not parse_install_output("Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]").permanent
    assert not parse_install_output("garbage").permanent
    assert not parse_install_output("Success").permanent


def test_uninstall_answers() -> None:
    assert parse_uninstall_output("Success\n") is UninstallResult.REMOVED
    assert (
        parse_uninstall_output("Failure [not installed for 0]\n") is UninstallResult.NOT_INSTALLED
    )
    assert parse_uninstall_output("Unknown package: com.x\n") is UninstallResult.NOT_INSTALLED
    error = parse_uninstall_output("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
    assert isinstance(error, PackageManagerError)
    assert error.code == "DELETE_FAILED_INTERNAL_ERROR"


def test_package_lists_with_and_without_version_codes() -> None:
    output = (
        "package:com.android.shell versionCode:33\n"
        "package:com.example.big versionCode:4294967298\n"
        "package:com.old.listing\n"
        "not a package line\n"
    )
    assert parse_package_list(output) == {
        "com.android.shell": 33,
        "com.example.big": 4294967298,
        "com.old.listing": 0,
    }


def test_deadlines_grow_with_the_file() -> None:
    timeouts = TransferTimeouts(floor=timedelta(seconds=10), min_rate=1024 * 1024)
    assert timeouts.for_size(0) == timedelta(seconds=10)
    assert timeouts.for_size(200 * 1024 * 1024) == timedelta(seconds=210)
    with pytest.raises(ValueError, match="positive"):
        TransferTimeouts(min_rate=0)


def test_device_paths_stay_inside_the_device_and_only_tmp_and_sdcard_are_writable() -> None:
    files = DeviceFiles(Path("/srv/device/fs"))
    assert files.host_path("/data/local/tmp/../../../../etc/passwd") == Path(
        "/srv/device/fs/etc/passwd"
    )
    assert files.host_path("//data//local/tmp/a.apk") == Path("/srv/device/fs/data/local/tmp/a.apk")
    assert files.writable("/data/local/tmp/a.apk")
    assert files.writable("/sdcard/Download/x")
    assert not files.writable("/data/local/tmp/../app/x.apk")
    assert not files.writable("/data/local/tmp")
    assert not files.writable("/system/app/x.apk")
    for bad in ("relative/path", "/nul\0byte"):
        with pytest.raises(OSError, match="Invalid argument"):
            files.host_path(bad)
