"""The device agent's ``sync:`` service: ``adb push``/``pull``/``stat``/``ls`` of adbd.

A sync stream carries requests, each an 8-byte header (4-byte id, little-endian u32 length)
and, for most, a path; requests and answers run over as many ``WRTE`` payloads as they need:

- ``SEND "<path>,<mode>"``, then ``DATA`` chunks of at most 64 KiB, then ``DONE <mtime>`` →
  ``OKAY`` or ``FAIL <message>``. The file is streamed to a temporary file beside the
  target and renamed over it on ``DONE``, with its mode and mtime, so the agent never holds
  the file in memory and a push cut short leaves nothing half-written behind.
- ``STAT <path>`` → ``STAT mode size mtime`` (all zero when there is no such file).
- ``RECV <path>`` → ``DATA`` chunks, then ``DONE`` (or ``FAIL``).
- ``LIST <path>`` → a ``DENT mode size mtime namelen name`` per entry, then ``DONE``.
- ``QUIT`` ends the stream; anything else is a ``FAIL``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from cloudphone.devices.agent_adb import AdbStream
from cloudphone.devices.agent_files import DeviceFiles

SYNC_DATA_MAX = 64 * 1024
"""Largest ``DATA`` chunk (adbd's ``SYNC_DATA_MAX``)."""
MAX_PATH = 1024
"""Longest path a request may carry."""
REQUEST = struct.Struct("<4sI")
STAT_REPLY = struct.Struct("<4s3I")
DENT = struct.Struct("<4s4I")


class SyncReader:
    """Reads exact byte counts from a stream whose payloads split them anywhere."""

    def __init__(self, stream: AdbStream) -> None:
        self.stream = stream
        self._buffer = b""

    async def exactly(self, size: int) -> bytes | None:
        """The next ``size`` bytes; None when the stream ended first."""
        while len(self._buffer) < size:
            more = await self.stream.read()
            if not more:
                return None
            self._buffer += more
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class SyncSession:
    """One ``sync:`` stream.

    Args:
        stream: The opened stream.
        files: The device's filesystem.
    """

    def __init__(self, stream: AdbStream, files: DeviceFiles) -> None:
        self.stream = stream
        self.reader = SyncReader(stream)
        self.files = files
        self._handlers: dict[bytes, Callable[[str], Awaitable[bool]]] = {
            b"SEND": self._send,
            b"STAT": self._stat,
            b"RECV": self._recv,
            b"LIST": self._list,
        }

    async def run(self) -> None:
        """Answer requests until ``QUIT``, the stream's end, or a failed push."""
        while True:
            header = await self.reader.exactly(REQUEST.size)
            if header is None:
                return
            request, length = REQUEST.unpack(header)
            handler = self._handlers.get(request)
            if handler is None or length > MAX_PATH:
                if request != b"QUIT":
                    await self._fail(f"unknown sync request {request!r}")
                return
            raw = await self.reader.exactly(length)
            if raw is None or not await handler(raw.decode(errors="replace")):
                return

    async def _fail(self, message: str) -> None:
        data = message.encode()
        await self.stream.write(REQUEST.pack(b"FAIL", len(data)) + data)

    async def _send(self, spec: str) -> bool:
        target, problem = self._target(spec)
        tmp = None if target is None else target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            mtime, problem = await self._receive_file(tmp, problem)
            if mtime is None:
                return False
            if problem is None and tmp is not None and target is not None:
                try:
                    os.chmod(tmp, stat.S_IMODE(int(spec.rpartition(",")[2])))
                    os.utime(tmp, (mtime, mtime))
                    tmp.replace(target)
                except OSError as error:
                    problem = f"write failed: {error.strerror}"
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if problem is not None:
            # Only after DONE: adb-shell reads no answer while it pushes (an early FAIL
            # would be dropped), and the stream ends after a failed push, as adbd's does.
            await self._fail(problem)
            return False
        await self.stream.write(REQUEST.pack(b"OKAY", 0))
        return True

    def _target(self, spec: str) -> tuple[Path | None, str | None]:
        """Where a ``SEND`` writes, or why it cannot."""
        path, _, mode_text = spec.rpartition(",")
        if not mode_text.isdigit():
            return None, f"bad SEND request {spec!r}"
        if not stat.S_ISREG(int(mode_text)):
            return None, "only regular files can be pushed here"
        try:
            return self.files.for_writing(path), None
        except OSError as error:
            return None, f"couldn't create file: {error.strerror}"

    async def _receive_file(
        self, tmp: Path | None, problem: str | None
    ) -> tuple[int | None, str | None]:
        """Stream ``DATA`` chunks into ``tmp`` until ``DONE``: (its mtime, what went wrong).

        The mtime is None when the stream ended first. After a problem the remaining chunks
        are read and dropped, so the client gets to send ``DONE`` and read the ``FAIL``.
        """
        out = None if tmp is None or problem else open(tmp, "wb")  # noqa: ASYNC230, SIM115 - local disk
        try:
            while True:
                header = await self.reader.exactly(REQUEST.size)
                if header is None:
                    return None, problem
                request, value = REQUEST.unpack(header)
                if request == b"DONE":
                    return value, problem
                if request != b"DATA" or value > SYNC_DATA_MAX:
                    return None, f"unexpected {request!r} of {value} bytes in SEND"
                chunk = await self.reader.exactly(value)
                if chunk is None:
                    return None, problem
                if out is not None:
                    try:
                        out.write(chunk)
                    except OSError as error:
                        problem = f"write failed: {error.strerror}"
                        out.close()
                        out = None
        finally:
            if out is not None:
                out.close()

    async def _stat(self, path: str) -> bool:
        try:
            info = self.files.host_path(path).lstat()
            reply = STAT_REPLY.pack(b"STAT", info.st_mode, info.st_size, int(info.st_mtime))
        except OSError:
            reply = STAT_REPLY.pack(b"STAT", 0, 0, 0)
        await self.stream.write(reply)
        return True

    async def _recv(self, path: str) -> bool:
        try:
            # Local disk, read chunk by chunk between writes; closed below.
            source = open(self.files.host_path(path), "rb")  # noqa: ASYNC230, SIM115
        except OSError as error:
            await self._fail(f"open failed: {error.strerror}")
            return True
        with source:
            while chunk := source.read(SYNC_DATA_MAX):
                await self.stream.write(REQUEST.pack(b"DATA", len(chunk)) + chunk)
        await self.stream.write(REQUEST.pack(b"DONE", 0))
        return True

    async def _list(self, path: str) -> bool:
        entries = b""
        with contextlib.suppress(OSError):
            directory = self.files.host_path(path)
            for name in (".", "..", *sorted(os.listdir(directory))):
                info = (directory / name).lstat()
                raw = name.encode()
                entries += DENT.pack(
                    b"DENT", info.st_mode, info.st_size, int(info.st_mtime), len(raw)
                )
                entries += raw
        await self.stream.write(entries + DENT.pack(b"DONE", 0, 0, 0, 0))
        return True


def sync_service(files: DeviceFiles) -> Callable[[AdbStream], Awaitable[None]]:
    """The ``sync:`` service over ``files``."""

    async def serve(stream: AdbStream) -> None:
        await SyncSession(stream, files).run()

    return serve
