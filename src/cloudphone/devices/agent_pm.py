"""The device agent's package manager: ``pm install``, ``pm uninstall``, ``pm list packages``.

It reads a pushed APK's manifest with :mod:`cloudphone.apk` (only the metadata entries, so a
large APK costs no memory), decides as Android's package manager does, and keeps what is
installed in ``packages.json`` in the device's data directory (written atomically), so an
agent restarted on the same directory still has its apps. The APK itself is kept under
``/data/app/<package>-<token>/base.apk`` (a hard link to the pushed file).

Answers follow Android 11-14 (``cmd package``), as ``adb shell`` prints them:

- ``install [-r] [-R] [-d] [-t] [-g] PATH``: replacing an installed app is the default since
  Android 9 (``-r`` is accepted and ignored; ``-R`` refuses with
  ``Failure [INSTALL_FAILED_ALREADY_EXISTS: ...]``); a lower version code is refused
  (``INSTALL_FAILED_VERSION_DOWNGRADE``) unless ``-d``; a ``minSdkVersion`` above the
  device's gives ``INSTALL_FAILED_OLDER_SDK``, an Android 14 device refuses
  ``targetSdkVersion`` < 23 (``INSTALL_FAILED_DEPRECATED_SDK_VERSION``), a file that is not
  an APK ``INSTALL_PARSE_FAILED_NOT_APK``; a missing file "Error: Can't open file: PATH".
  Signatures are not checked (the test APKs are unsigned).
- ``uninstall [-k] [--user N] PACKAGE``: ``Success``, or ``Failure [not installed for 0]``.
- ``list packages [-3|-s|-f|-U|-i|-e|-d|-u|-a|-l] [--show-versioncode] [--user N] [FILTER]``:
  ``package:NAME`` lines (``versionCode:N`` with ``--show-versioncode``), NAME containing
  FILTER. Only installed apps are listed: the agent has no system packages.
- ``path PACKAGE``: ``package:/data/app/.../base.apk``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudphone.apk import ApkError, ApkInfo, ManifestInvalidError, is_valid_package_name, parse_apk
from cloudphone.devices.agent_files import DeviceFiles

Answer = tuple[str, int]
"""Output and exit status of a command."""

MIN_TARGET_SDK_14 = 23
"""Android 14 refuses apps targeting an SDK below this."""
LIST_FLAGS = {"-3", "-s", "-f", "-U", "-i", "-e", "-d", "-u", "-a", "-l", "--show-versioncode"}
INSTALL_FLAGS = {"-r", "-R", "-d", "-t", "-g", "-f", "--dont-kill", "--force-sdk", "--full"}


@dataclass(frozen=True)
class InstalledPackage:
    """One installed app as ``packages.json`` records it."""

    package: str
    version_code: int
    version_name: str | None
    min_sdk: int
    target_sdk: int
    code_path: str
    """Device directory holding ``base.apk``."""


def _failure(code: str, message: str) -> Answer:
    return f"Failure [{code}: {message}]\n", 1


def _options(args: Sequence[str], flags: set[str]) -> tuple[set[str], list[str], str | None]:
    """Split ``args`` into known flags and operands (``--user N`` skipped); the bad option."""
    seen: set[str] = set()
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--user":
            next(words, None)
        elif word.startswith("-") and not rest:
            if word not in flags:
                return seen, rest, word
            seen.add(word)
        else:
            rest.append(word)
    return seen, rest, None


class PackageManager:
    """The packages of one device.

    Args:
        files: The device's filesystem.
        state_path: Where the installed packages are recorded.
        sdk: The device's API level.
    """

    def __init__(self, files: DeviceFiles, state_path: Path, sdk: int) -> None:
        self.files = files
        self.state_path = Path(state_path)
        self.sdk = sdk
        self._lock = asyncio.Lock()
        self._commands: dict[str, Callable[[list[str]], Any]] = {
            "install": self.install,
            "uninstall": self.uninstall,
            "list": self.list_packages,
            "path": self.path,
        }

    def packages(self) -> dict[str, InstalledPackage]:
        """What is installed, by package name."""
        try:
            raw: dict[str, dict[str, Any]] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        return {name: InstalledPackage(**entry) for name, entry in raw.items()}

    def _save(self, packages: dict[str, InstalledPackage]) -> None:
        tmp = self.state_path.with_name(f".{self.state_path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps({name: asdict(p) for name, p in sorted(packages.items())}))
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        tmp.replace(self.state_path)

    async def run(self, args: list[str]) -> Answer:
        """``pm ARGS``."""
        command = self._commands.get(args[0]) if args else None
        if command is None:
            return f"Unknown command: {args[0] if args else ''}\n", 255
        answer: Answer = await command(args[1:])
        return answer

    async def install(self, args: list[str]) -> Answer:
        """``pm install [flags] PATH``."""
        flags, paths, bad = _options(args, INSTALL_FLAGS)
        if bad is not None:
            return f"Error: java.lang.IllegalArgumentException: Unknown option {bad}\n", 255
        if len(paths) != 1:
            return "Error: must either specify a package size or an APK file\n", 1
        path = paths[0]
        try:
            source = self.files.host_path(path)
            if not source.is_file():
                raise FileNotFoundError(path)
        except OSError:
            message = f"Error: Can't open file: {path}"
            exception = f"java.lang.IllegalArgumentException: {message}"
            return f"{message}\nException occurred while executing 'install':\n{exception}\n", 255
        try:
            # In the loop, no thread: the agent runs under an address-space limit in which
            # every thread's stack and malloc arena count; the parse reads only metadata.
            info = parse_apk(source)
        except ApkError as error:
            code = (
                "INSTALL_PARSE_FAILED_MANIFEST_MALFORMED"
                if isinstance(error, ManifestInvalidError)
                else "INSTALL_PARSE_FAILED_NOT_APK"
            )
            return _failure(code, f"Failed to parse {path}: {error}")
        async with self._lock:
            return await self._install(
                source, info, replace="-R" not in flags, downgrade="-d" in flags
            )

    async def _install(
        self, source: Path, info: ApkInfo, *, replace: bool, downgrade: bool
    ) -> Answer:
        refusal = self._refusal(info, replace=replace, downgrade=downgrade)
        if refusal is not None:
            return refusal
        packages = self.packages()
        code_path = f"/data/app/{info.package}-{secrets.token_urlsafe(8)}"
        self.files.install_copy(source, f"{code_path}/base.apk")  # a hard link: instant
        previous = packages.get(info.package)
        packages[info.package] = InstalledPackage(
            package=info.package,
            version_code=info.long_version_code or 0,
            version_name=info.version_name,
            min_sdk=info.effective_min_sdk,
            target_sdk=info.effective_target_sdk,
            code_path=code_path,
        )
        self._save(packages)
        if previous is not None:
            self.files.remove_tree(previous.code_path)
        return "Success\n", 0

    def _refusal(self, info: ApkInfo, *, replace: bool, downgrade: bool) -> Answer | None:
        """Why Android would refuse this APK here, or None."""
        if not is_valid_package_name(info.package):
            return _failure(
                "INSTALL_PARSE_FAILED_BAD_PACKAGE_NAME", f"Invalid manifest package: {info.package}"
            )
        if info.effective_min_sdk > self.sdk:
            return _failure(
                "INSTALL_FAILED_OLDER_SDK",
                f"Requires newer sdk version #{info.effective_min_sdk} "
                f"(current version is #{self.sdk})",
            )
        if self.sdk >= 34 and info.effective_target_sdk < MIN_TARGET_SDK_14:
            return _failure(
                "INSTALL_FAILED_DEPRECATED_SDK_VERSION",
                f"App package must target at least SDK version {MIN_TARGET_SDK_14}, "
                f"but found {info.effective_target_sdk}",
            )
        installed = self.packages().get(info.package)
        if installed is None:
            return None
        if not replace:
            return _failure(
                "INSTALL_FAILED_ALREADY_EXISTS",
                f"Attempt to re-install {info.package} without first uninstalling.",
            )
        new_code = info.long_version_code or 0
        if new_code < installed.version_code and not downgrade:
            return _failure(
                "INSTALL_FAILED_VERSION_DOWNGRADE",
                f"Downgrade detected: Update version code {new_code} is older than current "
                f"{installed.version_code}",
            )
        return None

    async def uninstall(self, args: list[str]) -> Answer:
        """``pm uninstall [-k] [--user N] PACKAGE``."""
        _flags, names, bad = _options(args, {"-k"})
        if bad is not None:
            return f"Error: Unknown option: {bad}\n", 1
        if not names:
            return "Error: package name not specified\n", 1
        async with self._lock:
            packages = self.packages()
            removed = packages.pop(names[0], None)
            if removed is None:
                return "Failure [not installed for 0]\n", 1
            try:
                self._save(packages)
            except OSError:
                return "Failure [DELETE_FAILED_INTERNAL_ERROR]\n", 1
            self.files.remove_tree(removed.code_path)
        return "Success\n", 0

    async def list_packages(self, args: list[str]) -> Answer:
        """``pm list packages [flags] [FILTER]``."""
        if args[:1] not in (["packages"], ["package"]):
            kind = args[0] if args else ""
            return f"Error: unknown list type '{kind}'\n", 255
        flags, rest, bad = _options(args[1:], LIST_FLAGS)
        if bad is not None:
            return f"Error: Unknown option: {bad}\n", 255
        wanted = rest[0] if rest else ""
        lines = []
        for name, package in sorted(self.packages().items()):
            if wanted not in name or "-s" in flags:
                continue  # every package here is a third-party app
            source = f"{package.code_path}/base.apk=" if "-f" in flags else ""
            version = (
                f" versionCode:{package.version_code}" if "--show-versioncode" in flags else ""
            )
            lines.append(f"package:{source}{name}{version}\n")
        return "".join(lines), 0

    async def path(self, args: list[str]) -> Answer:
        """``pm path PACKAGE``."""
        package = self.packages().get(args[-1]) if args else None
        if package is None:
            return "", 1
        return f"package:{package.code_path}/base.apk\n", 0
