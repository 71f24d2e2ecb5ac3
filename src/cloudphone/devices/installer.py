"""The app-installer port: what installing an APK on a device needs from its runtime.

A runtime opens an ADB session to a running device (``DeviceRuntime.adb_session``); the
session pushes files, runs the package manager and reads what is installed. Both runtimes
implement it with adb-shell (:class:`cloudphone.devices.adb.AdbSession`), against Redroid's
adbd or the device agent's. This module holds the port, its typed results and errors, the
parsers of what Android's ``pm`` prints, and the timeouts sized to a file.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from cloudphone.devices.runtimes.base import DeviceRuntimeError

Progress = Callable[[int, int], None]
"""Called as bytes go out: ``(bytes_sent_so_far, total_bytes)``."""

REMOTE_TMP = "/data/local/tmp"
"""Where APKs are pushed before ``pm install`` (writable by the shell user)."""

INSTALL_FAILED_ALREADY_EXISTS = "INSTALL_FAILED_ALREADY_EXISTS"
INSTALL_FAILED_VERSION_DOWNGRADE = "INSTALL_FAILED_VERSION_DOWNGRADE"
INSTALL_FAILED_OLDER_SDK = "INSTALL_FAILED_OLDER_SDK"
INSTALL_PARSE_FAILED_NOT_APK = "INSTALL_PARSE_FAILED_NOT_APK"
INSTALL_FAILED_INVALID_URI = "INSTALL_FAILED_INVALID_URI"
"""The file to install is not there (Android 11+ prints "Error: Can't open file")."""
UNRECOGNISED_OUTPUT = "UNRECOGNISED_OUTPUT"
"""``pm`` printed neither ``Success`` nor a failure this module knows how to read."""

TRANSIENT_FAILURES = frozenset(
    {
        "INSTALL_FAILED_INSUFFICIENT_STORAGE",
        "INSTALL_FAILED_INTERNAL_ERROR",
        "INSTALL_FAILED_ABORTED",
        "INSTALL_FAILED_MEDIA_UNAVAILABLE",
        INSTALL_FAILED_INVALID_URI,
        UNRECOGNISED_OUTPUT,
    }
)
"""Failure codes a later attempt may not meet (everything else is about the APK itself)."""


class AdbError(DeviceRuntimeError):
    """The ADB conversation failed (refused, cut, timed out, garbled); retrying may help."""


class PushError(AdbError):
    """The device refused a pushed file (adbd's sync ``FAIL``: permission, space...)."""


class PackageManagerError(AdbError):
    """``pm`` failed in a way its typed results do not cover.

    Attributes:
        code: The failure code (``DELETE_FAILED_INTERNAL_ERROR``...).
        output: What the device printed.
    """

    def __init__(self, code: str, output: str) -> None:
        super().__init__(f"{code}: {output.strip()[:300]}")
        self.code = code
        self.output = output


@dataclass(frozen=True)
class InstallResult:
    """What ``pm install`` answered.

    Attributes:
        ok: It printed ``Success``.
        code: The failure code (``INSTALL_FAILED_VERSION_DOWNGRADE``...), None on success.
        message: The device's answer (its last meaningful line).
    """

    ok: bool
    code: str | None
    message: str

    @property
    def permanent(self) -> bool:
        """A failure another attempt with the same APK would meet again."""
        return not self.ok and self.code not in TRANSIENT_FAILURES


class UninstallResult(enum.Enum):
    """What ``pm uninstall`` did (other failures raise :class:`PackageManagerError`)."""

    REMOVED = "removed"
    """It was installed and is gone (``Success``)."""
    NOT_INSTALLED = "not_installed"
    """There was nothing to remove (``Failure [not installed for 0]``)."""


@dataclass(frozen=True)
class TransferTimeouts:
    """How long pushing and installing a file of some size may take.

    Attributes:
        floor: Time allowed whatever the size (connection, ``pm`` start-up).
        min_rate: Slowest acceptable transfer, in bytes per second.
    """

    floor: timedelta = timedelta(seconds=30)
    min_rate: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.floor <= timedelta(0) or self.min_rate <= 0:
            raise ValueError("floor and min_rate must be positive")

    def for_size(self, size: int) -> timedelta:
        """The deadline of one transfer (or install) of ``size`` bytes."""
        return self.floor + timedelta(seconds=max(size, 0) / self.min_rate)


class AppInstaller(Protocol):
    """An ADB session to one running device: files and its package manager."""

    async def push(
        self, local_path: Path, remote_path: str, progress: Progress | None = None
    ) -> None:
        """Stream a local file to the device (mode 0644), within a deadline sized to it.

        Raises:
            PushError: The device refused the file.
            AdbError: The transfer failed or took too long.
        """
        ...

    async def install(
        self, remote_path: str, *, replace: bool = True, allow_downgrade: bool = False
    ) -> InstallResult:
        """``pm install`` a pushed APK (``-r``, or ``-R`` when not replacing; ``-d``).

        Raises:
            AdbError: No answer from the device (a refusal is a result, not an error).
        """
        ...

    async def uninstall(self, package: str) -> UninstallResult:
        """``pm uninstall``; a package that is not there is :attr:`UninstallResult.NOT_INSTALLED`.

        Raises:
            PackageManagerError: Any other failure.
            AdbError: No answer from the device.
        """
        ...

    async def list_packages(self, contains: str | None = None) -> dict[str, int]:
        """Installed packages (those whose name contains ``contains``) → version code."""
        ...

    async def remove(self, remote_path: str) -> None:
        """``rm -f`` a file on the device (nothing happens if it is not there)."""
        ...


_FAILURE = re.compile(r"Failure \[([^\]:\s]+)(?::\s*([^\]]*))?\]")
_PACKAGE_LINE = re.compile(r"^package:(\S+?)(?:\s+versionCode:(-?\d+))?\s*$")


def parse_install_output(output: str) -> InstallResult:
    """Read what ``pm install`` printed, in the forms Android 6 to 14 print it.

    ``Success``; ``Failure [CODE]`` or ``Failure [CODE: message]`` (a commit failure); and
    Android 11+'s exceptions before the commit: "Error: Failed to parse APK file: PATH[:
    reason]" (``INSTALL_FAILED_OLDER_SDK`` when the reason is the SDK level, else
    ``INSTALL_PARSE_FAILED_NOT_APK``) and "Error: Can't open file: PATH"
    (``INSTALL_FAILED_INVALID_URI``).
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if "Success" in lines:
        return InstallResult(True, None, "Success")
    for line in lines:
        failure = _FAILURE.search(line)
        if failure:
            return InstallResult(False, failure.group(1), line)
    for line in lines:
        if "Failed to parse APK file" in line:
            sdk = "Requires newer sdk version" in line
            code = INSTALL_FAILED_OLDER_SDK if sdk else INSTALL_PARSE_FAILED_NOT_APK
            return InstallResult(False, code, line)
        if "Can't open file" in line:
            return InstallResult(False, INSTALL_FAILED_INVALID_URI, line)
    return InstallResult(False, UNRECOGNISED_OUTPUT, lines[-1] if lines else "")


def parse_uninstall_output(output: str) -> UninstallResult | PackageManagerError:
    """Read what ``pm uninstall`` printed: a result, or the error to raise."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if "Success" in lines:
        return UninstallResult.REMOVED
    text = " ".join(lines)
    if "not installed for" in text or "Unknown package" in text:
        return UninstallResult.NOT_INSTALLED
    failure = _FAILURE.search(text)
    return PackageManagerError(failure.group(1) if failure else UNRECOGNISED_OUTPUT, text)


def parse_package_list(output: str) -> dict[str, int]:
    """``package:NAME versionCode:N`` lines → {NAME: N} (0 when no version is shown)."""
    packages = {}
    for line in output.splitlines():
        match = _PACKAGE_LINE.match(line.strip())
        if match:
            packages[match.group(1)] = int(match.group(2) or 0)
    return packages
