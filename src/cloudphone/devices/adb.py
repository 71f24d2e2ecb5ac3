"""Talking to a device's adbd over ADB with adb-shell: readiness, configuration, app installs.

adb-shell connects straight to adbd over TCP (no adb server process). A device is ready when
adbd answers, ``sys.boot_completed`` is 1 and ``ro.boot.serialno`` is the serial the docker
runtime passed as a boot argument. :class:`AdbSession` is the app-installer port
(:mod:`cloudphone.devices.installer`) over one connection: push (the sync service), ``pm
install``/``uninstall``/``list packages`` and ``rm``. No Redroid here: the tests drive the
same code against the device agent's adbd (:mod:`cloudphone.devices.agent`), as a local
process and inside a container.
"""

from __future__ import annotations

import asyncio
import shlex
import stat
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from cloudphone.devices.installer import (
    AdbError,
    InstallResult,
    PackageManagerError,
    Progress,
    PushError,
    TransferTimeouts,
    UninstallResult,
    parse_install_output,
    parse_package_list,
    parse_uninstall_output,
)
from cloudphone.devices.runtimes.base import DeviceBanner, DeviceBootError
from cloudphone.devices.spec import DeviceSpec

RC_MARK = "__cloudphone_rc="
"""Marker before the exit status a configure command echoes."""


class AdbLink:
    """A :class:`~cloudphone.devices.links.DeviceLink` over real ADB.

    Args:
        host: Address of the device's ADB port.
        port: The device's ADB port on the host.
        init_commands: Shell commands run after the screen settings.
        key_path: RSA key to authenticate with (created if missing); None tries without.
        io_timeout: Transport and read timeout of each call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        init_commands: Sequence[str] = (),
        key_path: Path | None = None,
        io_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.init_commands = tuple(init_commands)
        self.key_path = key_path
        self.io_timeout = io_timeout

    async def _signers(self) -> list[Any]:
        if self.key_path is None:
            return []
        from adb_shell.auth.keygen import keygen  # type: ignore[import-untyped]
        from adb_shell.auth.sign_pythonrsa import (  # type: ignore[import-untyped]
            PythonRSASigner,
        )

        path = self.key_path
        if not path.exists():
            await asyncio.to_thread(keygen, str(path))
        signer = await asyncio.to_thread(PythonRSASigner.FromRSAKeyPath, str(path))
        return [signer]

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Any]:
        from adb_shell.adb_device_async import AdbDeviceTcpAsync  # type: ignore[import-untyped]

        device = AdbDeviceTcpAsync(
            self.host, self.port, default_transport_timeout_s=self.io_timeout, banner="cloudphone"
        )
        try:
            connected = await device.connect(
                rsa_keys=await self._signers() or None,
                auth_timeout_s=self.io_timeout,
                read_timeout_s=self.io_timeout,
            )
            if not connected:
                raise ConnectionError(f"adb {self.host}:{self.port} refused the connection")
            yield device
        finally:
            await device.close()

    @asynccontextmanager
    async def apps(self, timeouts: TransferTimeouts | None = None) -> AsyncIterator[AdbSession]:
        """An app-installer session over one ADB connection.

        Raises:
            AdbError: The device cannot be reached or refused the connection.
        """
        async with AsyncExitStack() as stack:
            # Only the connection's failures are ADB errors, not those of the caller's block.
            with _adb_failures(f"adb {self.host}:{self.port}"):
                device = await stack.enter_async_context(self._session())
            yield AdbSession(device, timeouts or TransferTimeouts(), self.io_timeout)

    async def _shell(self, device: Any, command: str) -> str:
        output = await device.shell(command, read_timeout_s=self.io_timeout)
        return str(output).strip()

    async def probe(self, nonce: str) -> DeviceBanner:
        """Ready when booted; the banner's serial is ``ro.boot.serialno`` (ADB has no nonce)."""
        try:
            async with self._session() as device:
                if await self._shell(device, "getprop sys.boot_completed") != "1":
                    raise ConnectionError("adbd is up, Android is still booting")
                props = {
                    key: await self._shell(device, f"getprop {key}")
                    for key in ("ro.boot.serialno", "ro.product.model", "ro.build.version.sdk")
                }
        except (OSError, TimeoutError):
            raise
        except Exception as error:  # adb-shell raises its own types for protocol trouble
            raise ConnectionError(f"adb {self.host}:{self.port}: {error!r}") from error
        return DeviceBanner(serial=props["ro.boot.serialno"], properties=props)

    async def configure(self, spec: DeviceSpec) -> None:
        """``wm size``, ``wm density``, then the configured init commands."""
        commands = [
            f"wm size {spec.width}x{spec.height}",
            f"wm density {int(spec.dpi)}",
            *self.init_commands,
        ]
        try:
            async with self._session() as device:
                for command in commands:
                    # ADB's shell service has no exit status (protocol v1): echo it.
                    output = await self._shell(device, f"{command}; echo {RC_MARK}$?")
                    body, _, status = output.rpartition(RC_MARK)
                    if status.strip() != "0":
                        raise DeviceBootError(
                            f"{shlex.quote(command)} failed (exit {status.strip() or '?'}): "
                            f"{body.strip()[:200]}"
                        )
        except DeviceBootError:
            raise
        except Exception as error:
            raise DeviceBootError(f"adb {self.host}:{self.port}: {error!r}") from error


@contextmanager
def _adb_failures(what: str) -> Iterator[None]:
    """adb-shell's exceptions (and socket trouble) as :class:`AdbError`."""
    from adb_shell.exceptions import PushFailedError  # type: ignore[import-untyped]

    try:
        yield
    except AdbError:
        raise
    except PushFailedError as error:
        raise PushError(f"{what}: the device refused the file: {error}") from error
    except TimeoutError as error:
        raise AdbError(f"{what}: timed out") from error
    except Exception as error:  # adb-shell raises its own types for protocol trouble
        raise AdbError(f"{what}: {error!r}") from error


class AdbSession:
    """The app-installer port over one adb-shell connection.

    Args:
        device: A connected ``AdbDeviceTcpAsync``.
        timeouts: Deadlines sized to the file pushed or installed.
        io_timeout: Longest wait for the device on small commands.
    """

    def __init__(self, device: Any, timeouts: TransferTimeouts, io_timeout: float) -> None:
        self.device = device
        self.timeouts = timeouts
        self.io_timeout = io_timeout

    async def push(
        self, local_path: Path, remote_path: str, progress: Progress | None = None
    ) -> None:
        """Stream a local file to the device (mode 0644), within a deadline sized to it."""
        size = (await asyncio.to_thread(Path(local_path).stat)).st_size
        deadline = self.timeouts.for_size(size).total_seconds()
        # One stall may last the floor (the device syncing a large file after DONE).
        stall = max(self.io_timeout, self.timeouts.floor.total_seconds())
        sent = 0

        async def report(_path: str, count: int, total: int) -> None:
            nonlocal sent
            sent += count
            if progress is not None:
                progress(sent, total)

        with _adb_failures(f"push of {size} bytes to {remote_path}"):
            async with asyncio.timeout(deadline):
                await self.device.push(
                    str(local_path),
                    remote_path,
                    st_mode=stat.S_IFREG | 0o644,
                    progress_callback=report,
                    transport_timeout_s=stall,
                    read_timeout_s=stall,
                )

    async def install(
        self, remote_path: str, *, replace: bool = True, allow_downgrade: bool = False
    ) -> InstallResult:
        """``pm install -r|-R [-d] PATH``, given as long as reading the file may take."""
        with _adb_failures(f"stat {remote_path}"):
            _mode, size, _mtime = await self.device.stat(
                remote_path, read_timeout_s=self.io_timeout
            )
        flags = ["-r" if replace else "-R", *(["-d"] if allow_downgrade else [])]
        command = shlex.join(["pm", "install", *flags, remote_path])
        output = await self._run(command, self.timeouts.for_size(size).total_seconds())
        return parse_install_output(output)

    async def uninstall(self, package: str) -> UninstallResult:
        """``pm uninstall``; "not installed" (any Android's wording) is a result."""
        outcome = parse_uninstall_output(await self._run(shlex.join(["pm", "uninstall", package])))
        if isinstance(outcome, PackageManagerError):
            # Before Android 10 a missing package answered DELETE_FAILED_INTERNAL_ERROR.
            if package not in await self.list_packages(package):
                return UninstallResult.NOT_INSTALLED
            raise outcome
        return outcome

    async def list_packages(self, contains: str | None = None) -> dict[str, int]:
        """``pm list packages --show-versioncode [contains]`` → {package: version code}."""
        words = ["pm", "list", "packages", "--show-versioncode", *([contains] if contains else [])]
        return parse_package_list(await self._run(shlex.join(words)))

    async def remove(self, remote_path: str) -> None:
        """``rm -f PATH``."""
        await self._run(shlex.join(["rm", "-f", remote_path]))

    async def _run(self, command: str, timeout: float | None = None) -> str:  # noqa: ASYNC109
        limit = timeout or self.io_timeout
        with _adb_failures(command):
            output = await self.device.shell(
                command, transport_timeout_s=limit, read_timeout_s=limit, timeout_s=limit
            )
        return str(output)
