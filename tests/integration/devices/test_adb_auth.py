"""ADB authentication: an agent with ``adb_keys`` admits only a client signing with one of them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adb_shell.auth.keygen import keygen

from cloudphone.devices.adb import AdbLink
from cloudphone.devices.installer import AdbError
from cloudphone.devices.links import LineLink, wait_ready
from cloudphone.devices.runtimes.local import AGENT_MODULE
from tests.support.devices_apps import two_free_ports


def authorised_key(directory: Path) -> Path:
    """A new RSA key whose public half is the device's only ``adb_keys`` line."""
    key = directory / "adbkey"
    keygen(str(key))  # writes adbkey and adbkey.pub (Android's public key format)
    (directory / "adb_keys").write_text(Path(f"{key}.pub").read_text())
    return key


@pytest.fixture
async def secure_agent(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """An agent whose adb_keys holds one key; yields its ADB port and that key's path."""
    key = authorised_key(tmp_path)
    adb_port, stream_port = two_free_ports()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", AGENT_MODULE, "--adb-port", str(adb_port),
        "--stream-port", str(stream_port), "--serial", "secure-1",
        "--data-dir", str(tmp_path / "device"), "--adb-keys", str(tmp_path / "adb_keys"),
    )  # fmt: skip

    async def alive() -> bool:
        return process.returncode is None

    try:
        await wait_ready(LineLink("127.0.0.1", adb_port), "secure-1", alive, 20)
        yield adb_port, key
    finally:
        process.terminate()
        await process.wait()


async def test_a_client_with_an_authorised_key_gets_in(
    secure_agent: tuple[int, Path],
) -> None:
    """AUTH TOKEN → the client's signature verifies against adb_keys → CNXN, then ADB works."""
    port, key = secure_agent
    async with AdbLink("127.0.0.1", port, key_path=key).apps() as phone:
        assert await phone.list_packages() == {}
    banner = await AdbLink("127.0.0.1", port, key_path=key).probe("-")
    assert banner.serial == "secure-1"


async def test_strangers_are_turned_away(secure_agent: tuple[int, Path], tmp_path: Path) -> None:
    """No key, or a key not in adb_keys: the connection is refused (no user to ask here)."""
    port, _key = secure_agent
    with pytest.raises(AdbError, match="no keys available"):
        async with AdbLink("127.0.0.1", port).apps():
            pass
    stranger = tmp_path / "stranger"
    with pytest.raises(AdbError):
        async with AdbLink("127.0.0.1", port, key_path=stranger, io_timeout=2).apps():
            pass
    assert stranger.exists()  # the client made itself a key, and it was not enough
