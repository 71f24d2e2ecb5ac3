r"""Talking to a device on its ADB port: the agent line protocol and the boot wait.

The fake device agents (the local runtime's child processes and the busybox test image)
speak a tiny line protocol on their ADB port, one request per connection::

    "CNXN? <nonce>\\n"          -> "CNXN <serial> <nonce> device::<key>=<value>;...\\n"
    "PING\\n"                   -> "PONG\\n"
    "SETPROP <key> <value>\\n"  -> "OK\\n"
    "GETPROP <key>\\n"          -> "PROP <key> <value>\\n"  (empty value when unset)
    anything else              -> "ERR unknown\\n"

Checking the echoed nonce and the serial matters: when a port is already taken, the new device
fails to bind while *another* process answers on that port. Real Redroid devices speak ADB
instead (see :mod:`cloudphone.devices.adb`); both are a :class:`DeviceLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from cloudphone.devices.runtimes.base import DeviceBanner, DeviceBootError
from cloudphone.devices.spec import DeviceSpec

PROP_KEY = re.compile(r"^[a-z][a-z0-9._]{0,63}$")
"""Property names the agents accept."""

DISPLAY_PROP = "persist.cloudphone.display"
"""Property holding ``WIDTHxHEIGHT@DPI`` after initialisation."""


class DeviceLink(Protocol):
    """One way of talking to a device."""

    async def probe(self, nonce: str) -> DeviceBanner:
        """One readiness check; raises OSError or TimeoutError while the device is not up."""
        ...

    async def configure(self, spec: DeviceSpec) -> None:
        """Apply the screen settings and init commands; raises DeviceBootError."""
        ...


def parse_properties(text: str) -> dict[str, str]:
    """``device::a=1;b=2;`` (adbd's banner format) as a dict."""
    body = text.split("::", 1)[1] if "::" in text else text
    pairs = (item.split("=", 1) for item in body.split(";") if "=" in item)
    return dict(pairs)


class LineLink:
    """The agent line protocol over TCP.

    Args:
        host: Address of the device's ADB port.
        port: The device's ADB port.
        io_timeout: Longest wait for connecting and for each answer.
    """

    def __init__(self, host: str, port: int, io_timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.io_timeout = io_timeout

    async def request(self, line: str) -> str:
        """Send one request line; return the answer line (without the newline)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.io_timeout
        )
        try:
            writer.write(f"{line}\n".encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), self.io_timeout)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not answer.endswith(b"\n"):
            raise ConnectionError(f"{self.host}:{self.port} closed without a full answer")
        return answer.decode(errors="replace").rstrip("\r\n")

    async def probe(self, nonce: str) -> DeviceBanner:
        """``CNXN?`` handshake; the nonce must come back."""
        answer = await self.request(f"CNXN? {nonce}")
        parts = answer.split(" ", 3)
        if len(parts) != 4 or parts[0] != "CNXN" or parts[2] != nonce:
            raise ConnectionError(f"bad handshake answer {answer[:200]!r}")
        return DeviceBanner(serial=parts[1], properties=parse_properties(parts[3]))

    async def set_prop(self, key: str, value: str) -> None:
        """SETPROP, then GETPROP to check it stuck."""
        if not PROP_KEY.match(key) or any(c.isspace() for c in value):
            raise ValueError(f"bad property {key!r}={value!r}")
        answer = await self.request(f"SETPROP {key} {value}")
        if answer != "OK":
            raise DeviceBootError(f"SETPROP {key} answered {answer[:200]!r}")
        if await self.get_prop(key) != value:
            raise DeviceBootError(f"property {key} did not keep {value!r}")

    async def get_prop(self, key: str) -> str:
        """GETPROP; empty when unset."""
        answer = await self.request(f"GETPROP {key}")
        parts = answer.split(" ", 2)
        if len(parts) < 2 or parts[0] != "PROP" or parts[1] != key:
            raise DeviceBootError(f"GETPROP {key} answered {answer[:200]!r}")
        return parts[2] if len(parts) == 3 else ""

    async def configure(self, spec: DeviceSpec) -> None:
        """Record the screen settings on the device."""
        await self.set_prop(DISPLAY_PROP, f"{spec.resolution}@{spec.dpi}")


async def wait_ready(
    link: DeviceLink,
    serial: str,
    alive: Callable[[], Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109 - the boot deadline is this function's contract
    interval: float = 0.05,
) -> DeviceBanner:
    """Probe until the device answers as ``serial``; fail fast once its container is gone.

    Args:
        link: How to talk to it.
        serial: The serial it must answer with (another device may hold a clashing port).
        alive: Whether its container still runs (checked after each failed probe).
        timeout: Seconds before giving up with TimeoutError.
        interval: Pause between probes.

    Raises:
        DeviceBootError: The container stopped, or a different device answers.
        TimeoutError: Not ready in time.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            banner = await link.probe(secrets.token_hex(8))
            if banner.serial == serial:
                return banner
            last = DeviceBootError(f"its port is answered by another device ({banner.serial!r})")
        except (OSError, TimeoutError) as error:
            last = error
        if not await alive():
            raise DeviceBootError(f"device {serial} stopped before it was ready (last: {last!r})")
        if time.monotonic() >= deadline:
            if isinstance(last, DeviceBootError):
                raise last
            raise TimeoutError(f"device {serial} not ready after {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
