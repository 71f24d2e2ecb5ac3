"""Talking to a real Android device (Redroid's adbd) over ADB, with adb-shell.

adb-shell connects straight to adbd over TCP (no adb server process). A device is ready when
adbd answers, ``sys.boot_completed`` is 1 and ``ro.boot.serialno`` is the serial the docker
runtime passed as a boot argument. Not exercised by the test suite (no Redroid image or
binder driver here); the fake agents speak :mod:`cloudphone.devices.links` instead.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
