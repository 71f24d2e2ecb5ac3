"""The upload spool: request bodies streamed to temp files that live until their saga ends.

An upload is written to ``<dir>/<token>.apk`` in 1 MiB writes (never held in memory whole),
hashed with SHA-256 and counted as it streams, and refused once it passes the size limit. The
receiving process holds an exclusive ``flock`` on the file from creation until the saga that
will read it has been started (or the upload was refused), so a sweeper in any process on the
host can tell a file still being received from a leftover.

Who removes a spooled file: the saga's last step (success), its first step's compensation
(failure), the receiver (refused upload), and :meth:`UploadSpool.sweep` for the rest — files
of finished or unknown sagas, also after a crash.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cloudphone.domain import PayloadTooLargeError

log = logging.getLogger("cloudphone.apps.spool")

_NAME = re.compile(r"[0-9a-f]{32}\.apk")
_WRITE_SIZE = 1024 * 1024
SWEEP_GRACE = 60.0
"""Seconds a spooled file must have been left untouched before a sweep may remove it."""


@dataclass
class SpooledUpload:
    """A received upload on disk, locked by this process until released.

    Attributes:
        name: File name inside the spool (what the saga data carries).
        path: Full path of the file.
        size: Bytes received.
        sha256: Hex SHA-256 of the bytes.
    """

    name: str
    path: Path
    size: int
    sha256: str
    _file: BinaryIO | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the lock and keep the file: its saga owns it now."""
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def discard(self) -> None:
        """Remove the file and drop the lock (the upload was refused)."""
        self.path.unlink(missing_ok=True)
        self.release()


class UploadSpool:
    """The directory holding uploads between their request and the end of their saga."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().absolute()

    def path(self, name: str) -> Path:
        """The path of a spooled file named in saga data.

        Raises:
            ValueError: ``name`` is not a spool file name (it could point elsewhere).
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a spool file name: {name!r}")
        return self.directory / name

    async def receive(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> SpooledUpload:
        """Stream ``chunks`` into a new locked spool file, hashing and counting.

        Raises:
            PayloadTooLargeError: More than ``max_bytes`` arrived (the file is removed).
        """
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        name = secrets.token_hex(16) + ".apk"
        path = self.directory / name
        file = await asyncio.to_thread(_create_locked, path)
        upload = SpooledUpload(name, path, 0, "", file)
        try:
            digest = await self._copy(chunks, file, upload, max_bytes)
        except BaseException:
            upload.discard()
            raise
        upload.sha256 = digest
        return upload

    @staticmethod
    async def _copy(
        chunks: AsyncIterable[bytes], file: BinaryIO, upload: SpooledUpload, max_bytes: int
    ) -> str:
        digest = hashlib.sha256()
        buffer = bytearray()

        def flush(data: bytes) -> None:
            digest.update(data)  # hashlib releases the GIL on large buffers
            file.write(data)

        async for chunk in chunks:
            upload.size += len(chunk)
            if upload.size > max_bytes:
                raise PayloadTooLargeError(
                    f"the upload is larger than the limit of {max_bytes} bytes"
                )
            buffer += chunk
            if len(buffer) >= _WRITE_SIZE:
                await asyncio.to_thread(flush, bytes(buffer))
                buffer.clear()
        await asyncio.to_thread(flush, bytes(buffer))
        await asyncio.to_thread(file.flush)
        return digest.hexdigest()

    def remove(self, name: str) -> None:
        """Remove a spooled file (nothing happens if it is gone)."""
        self.path(name).unlink(missing_ok=True)

    async def sweep(
        self,
        in_use: Callable[[], Awaitable[Collection[str]]],
        *,
        grace: float = SWEEP_GRACE,
    ) -> list[str]:
        """Remove spooled files that no receiver holds and no active saga needs.

        Args:
            in_use: Returns the names that active sagas still need. It is called after the
                candidate files are locked, so a saga started by a receiver that released its
                lock is always seen.
            grace: Files modified more recently than this many seconds ago are kept.

        Returns:
            The names removed.
        """
        held = await asyncio.to_thread(self._lock_idle_files, grace)
        try:
            needed = set(await in_use()) if held else set()
            removed = [name for name in held if name not in needed]
            for name in removed:
                self.remove(name)
        finally:
            for file in held.values():
                file.close()
        if removed:
            log.info("removed %d spooled uploads of finished sagas", len(removed))
        return removed

    def _lock_idle_files(self, grace: float) -> dict[str, BinaryIO]:
        if not self.directory.is_dir():
            return {}
        held: dict[str, BinaryIO] = {}
        cutoff = time.time() - grace
        for entry in os.scandir(self.directory):
            if not _NAME.fullmatch(entry.name):
                continue
            try:
                if entry.stat().st_mtime > cutoff:
                    continue
                file = open(entry.path, "rb")  # noqa: SIM115 - kept open to hold the lock
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()  # a receiver holds it
                continue
            held[entry.name] = file
        return held


def _create_locked(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    file = os.fdopen(fd, "wb")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        file.close()
        path.unlink(missing_ok=True)
        raise
    return file
