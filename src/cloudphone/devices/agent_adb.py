"""The device agent's adbd: the ADB transport, streams over one connection, and their services.

Enough of the real protocol for adb-shell (the client :mod:`cloudphone.devices.adb` uses for
Redroid) to drive the agent exactly as it drives Android's adbd. Messages are a 24-byte
little-endian header (command, arg0, arg1, data length, data checksum = byte sum, magic =
command XOR 0xffffffff) and data.

- ``CNXN`` handshake (protocol version 0x01000000, 1 MiB payloads like adbd since Android 9);
  with an ``adb_keys`` list, the ``AUTH`` exchange first (:mod:`.agent_auth`).
- Streams: ``OPEN(remote, 0, "<service>")`` → ``OKAY(local, remote)``; every ``WRTE`` is
  answered with ``OKAY`` once the service consumed it (so a fast sender never fills the
  agent's memory), and the agent sends its next ``WRTE`` only after the peer's ``OKAY``;
  ``CLSE`` from either side ends a stream (the agent answers a peer's ``CLSE`` with its own).
  Any number of streams run at once, each a task, told apart by their ids.
- Services: ``shell:<command>`` and ``exec:<command>`` (the output, then ``CLSE``), ``sync:``
  (:mod:`.agent_sync`). Anything else is refused with ``CLSE(0, remote)`` as adbd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

HEADER = struct.Struct("<6I")
VERSION = 0x01000000
MAX_PAYLOAD = 1024 * 1024
"""Largest message data the agent accepts and announces (adbd's since Android 9)."""


def _command(name: bytes) -> int:
    value: int = struct.unpack("<I", name)[0]
    return value


CNXN, OPEN, OKAY, WRTE, CLSE, AUTH = (
    _command(c) for c in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"AUTH")
)
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
"""``AUTH`` message kinds (arg0)."""

Service = Callable[["AdbStream"], Awaitable[None]]
"""Runs one opened stream (the connection closes the stream when it returns)."""
Router = Callable[[str], Service | None]
"""The service for an ``OPEN`` destination, or None to refuse it."""


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
    command, arg0, arg1, length, _checksum, magic = HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        raise ConnectionError("ADB message with a bad magic")
    if length > MAX_PAYLOAD:
        raise ConnectionError(f"ADB message of {length} bytes")
    return command, arg0, arg1, await reader.readexactly(length)


class Authenticator(Protocol):
    """Checks a peer's ``AUTH`` answers (:class:`~cloudphone.devices.agent_auth.AdbKeys`)."""

    def new_token(self) -> bytes:
        """A fresh random token for the peer to sign."""
        ...

    def verify(self, signature: bytes) -> bool:
        """Whether ``signature`` signs the last token with an authorised key."""
        ...


class StreamClosedError(ConnectionError):
    """The stream was closed (by the peer, or with its connection)."""


@dataclass(eq=False)
class AdbStream:
    """One open stream as its service sees it: read the peer's writes, write back."""

    connection: AdbConnection
    local_id: int
    remote_id: int
    closed: bool = False
    _inbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _acked: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._acked.set()

    async def read(self) -> bytes:
        """The next payload the peer wrote (acknowledged now); ``b""`` once it closed."""
        data = await self._inbox.get()
        if data is None:
            self._inbox.put_nowait(None)  # every later read sees the end too
            return b""
        if not self.closed:
            await self.connection.send(OKAY, self.local_id, self.remote_id)
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data`` in ``WRTE`` messages, each after the peer acknowledged the last."""
        size = self.connection.max_payload
        for start in range(0, len(data), size):
            await self._acked.wait()
            if self.closed:
                raise StreamClosedError(f"stream {self.local_id} is closed")
            self._acked.clear()
            await self.connection.send(
                WRTE, self.local_id, self.remote_id, data[start : start + size]
            )
        await self._acked.wait()

    async def close(self) -> None:
        """Close it from this side (``CLSE``); nothing happens if it is closed already."""
        if not self.closed:
            self._ended()
            await self.connection.send(CLSE, self.local_id, self.remote_id)

    def _received(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def _ended(self) -> None:
        self.closed = True
        self._inbox.put_nowait(None)
        self._acked.set()
        self.connection.streams.pop(self.local_id, None)


class AdbConnection:
    """One TCP connection speaking ADB to a peer.

    Args:
        reader: The connection's reader.
        writer: The connection's writer.
        banner: The ``device::`` banner's properties (``k=v;k=v;``).
        router: Picks the service of each opened stream.
        authenticator: Checks the peer's ``AUTH`` answers; None lets anyone connect.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        banner: str,
        router: Router,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = banner
        self.router = router
        self.authenticator = authenticator
        self.authenticated = authenticator is None
        self.max_payload = 4096
        self.streams: dict[int, AdbStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 1
        self._handlers = {CNXN: self._cnxn, AUTH: self._auth, OPEN: self._open}

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        """Write one message (one ``write`` call: messages of two streams never interleave)."""
        self.writer.write(packet(command, arg0, arg1, data))
        await self.writer.drain()

    async def serve(self, head: bytes = b"") -> None:
        """Read messages until the peer goes away; then end every stream's task."""
        try:
            while True:
                try:
                    command, arg0, arg1, data = await read_packet(self.reader, head)
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    return
                head = b""
                await self._dispatch(command, arg0, arg1, data)
        finally:
            for stream in list(self.streams.values()):
                stream._ended()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        handler = self._handlers.get(command)
        if handler is not None:
            await handler(arg0, arg1, data)
            return
        stream = self.streams.get(arg1) if self.authenticated else None
        if stream is None:
            return  # e.g. the peer's CLSE answering ours: that stream is gone already
        if command == WRTE:
            stream._received(data)
        elif command == OKAY:
            stream._acked.set()
        elif command == CLSE:
            await stream.close()

    async def _cnxn(self, _version: int, max_data: int, _data: bytes) -> None:
        self.max_payload = max(256, min(max_data, MAX_PAYLOAD))
        if self.authenticator is not None and not self.authenticated:
            await self.send(AUTH, AUTH_TOKEN, 0, self.authenticator.new_token())
            return
        await self._connected()

    async def _connected(self) -> None:
        self.authenticated = True
        await self.send(CNXN, VERSION, MAX_PAYLOAD, f"device::{self.banner}".encode())

    async def _auth(self, kind: int, _arg1: int, data: bytes) -> None:
        if self.authenticator is None or self.authenticated:
            return
        if kind == AUTH_SIGNATURE and self.authenticator.verify(data):
            await self._connected()
        elif kind == AUTH_SIGNATURE:
            await self.send(AUTH, AUTH_TOKEN, 0, self.authenticator.new_token())
        else:
            # An unknown public key: a phone would ask its user, and there is none here.
            self.writer.close()

    async def _open(self, remote_id: int, _arg1: int, data: bytes) -> None:
        destination = data.rstrip(b"\0").decode(errors="replace")
        service = self.router(destination) if self.authenticated else None
        if service is None:
            await self.send(CLSE, 0, remote_id)
            return
        stream = AdbStream(self, self._next_id, remote_id)
        self._next_id += 1
        self.streams[stream.local_id] = stream
        await self.send(OKAY, stream.local_id, remote_id)
        task = asyncio.create_task(self._run(service, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, service: Service, stream: AdbStream) -> None:
        with contextlib.suppress(StreamClosedError, ConnectionError, OSError):
            try:
                await service(stream)
            finally:
                await stream.close()
