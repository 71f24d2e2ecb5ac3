"""A minimal adbd for the device agent: the ADB transport handshake and the ``shell:`` service.

Enough of the real protocol for adb-shell (the client :mod:`cloudphone.devices.adb` uses for
Redroid) to connect without authentication and run shell commands, so that code path is
exercised against a real TCP peer. Messages are a 24-byte little-endian header (command,
arg0, arg1, data length, data checksum = byte sum, magic = command XOR 0xffffffff) and data.

One stream at a time: ``OPEN(local, 0, "shell:<cmd>")`` → ``OKAY`` → ``WRTE(output)`` → the
client's ``OKAY`` → ``CLSE``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

HEADER = struct.Struct("<6I")
VERSION = 0x01000000
MAX_DATA = 4096


def _command(name: bytes) -> int:
    value: int = struct.unpack("<I", name)[0]
    return value


CNXN, OPEN, OKAY, WRTE, CLSE = (_command(c) for c in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE"))


def packet(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One ADB message, header and data."""
    header = HEADER.pack(
        command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF
    )
    return header + data


async def read_packet(
    reader: asyncio.StreamReader, head: bytes = b""
) -> tuple[int, int, int, bytes]:
    """Read one message (``head``: bytes of its header already read)."""
    header = head + await reader.readexactly(HEADER.size - len(head))
    command, arg0, arg1, length, _checksum, _magic = HEADER.unpack(header)
    if length > 1024 * 1024:
        raise ConnectionError(f"ADB message of {length} bytes")
    return command, arg0, arg1, await reader.readexactly(length)


async def serve_adb(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: bytes,
    banner: str,
    shell: Callable[[str], str],
) -> None:
    """Speak ADB on a connection whose first ``head`` bytes were already read."""
    next_id = 1
    while True:
        try:
            command, arg0, _arg1, data = await read_packet(reader, head)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        head = b""
        if command == CNXN:
            writer.write(packet(CNXN, VERSION, MAX_DATA, f"device::{banner}".encode()))
        elif command == OPEN:
            service = data.rstrip(b"\0").decode(errors="replace")
            local_id, next_id = next_id, next_id + 1
            if not service.startswith("shell:"):
                writer.write(packet(CLSE, 0, arg0))
                continue
            output = shell(service.removeprefix("shell:")).encode()
            writer.write(packet(OKAY, local_id, arg0))
            writer.write(packet(WRTE, local_id, arg0, output[:MAX_DATA]))
            await writer.drain()
            # The client acknowledges the write; then the stream is closed.
            await read_packet(reader)
            writer.write(packet(CLSE, local_id, arg0))
        await writer.drain()
