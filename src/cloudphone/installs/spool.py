"""The worker's install spool: an APK fetched from storage waits here for its push.

The file of a run is ``<dir>/<saga id>.apk``, written through a hidden partial file and
renamed into place once its size and SHA-256 match the application record, so a file under
its final name is always whole and right. A retried or taken-over fetch starts the partial
file again; FETCH_APK's compensation and PUSH_AND_INSTALL's success remove the file. The
directory is per host: a run taken over by a worker on another host fetches again.

What a run leaves behind (it ended FAILED, or another host finished it) is found by
:meth:`ApkSpool.idle_files` and removed by :meth:`ApkSpool.remove_idle`, which the sweeper
(:mod:`cloudphone.installs.sweep`) calls for the runs no worker needs the file of any more.
Both look only at regular files named after a run, inside the directory: never through a
symbolic link, never anywhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

_SAGA_ID = re.compile(r"[0-9a-f-]{36}")
_PARTIAL = ".part"
_RUN_FILE = re.compile(
    r"(?P<id>[0-9a-f-]{36})\.apk|\.(?P<partial>[0-9a-f-]{36})\.apk\.[0-9a-f]+\.part"
)
"""``<run>.apk``, or the hidden partial file ``.<run>.apk.<random hex>.part`` of a fetch."""


class ChecksumMismatchError(Exception):
    """The bytes fetched are not the ones the application record describes."""


@dataclass(frozen=True)
class IdleFile:
    """A run's file in the spool that nothing has written to for a while.

    Attributes:
        name: File name inside the spool.
        saga_id: The run it belongs to.
        partial: A fetch's partial file, not a whole APK.
        size: Bytes, when it was listed.
    """

    name: str
    saga_id: str
    partial: bool
    size: int


class ApkSpool:
    """The directory of fetched APKs, one file per install run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().absolute()

    def path(self, saga_id: str) -> Path:
        """The file of a run.

        Raises:
            ValueError: ``saga_id`` is not a run id (it could name a file elsewhere).
        """
        if not _SAGA_ID.fullmatch(saga_id):
            raise ValueError(f"not a saga id: {saga_id!r}")
        return self.directory / f"{saga_id}.apk"

    async def receive(
        self, saga_id: str, chunks: AsyncIterator[bytes], *, size: int, sha256: str
    ) -> Path:
        """Write ``chunks`` as the run's file if they are ``size`` bytes hashing to ``sha256``.

        Raises:
            ChecksumMismatchError: They are not (nothing is left under the final name).
        """
        target = self.path(saga_id)
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._remove_partials, target)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}{_PARTIAL}")
        file = await asyncio.to_thread(partial.open, "xb")
        try:
            digest, written = await _copy(chunks, file)
            await asyncio.to_thread(_sync_and_close, file)
            if (written, digest) != (size, sha256):
                raise ChecksumMismatchError(
                    f"fetched {written} bytes with SHA-256 {digest}; the record says {size} "
                    f"bytes with SHA-256 {sha256}"
                )
            await asyncio.to_thread(os.replace, partial, target)
        finally:
            file.close()
            partial.unlink(missing_ok=True)
        return target

    async def holds(self, saga_id: str, *, size: int, sha256: str) -> bool:
        """Whether the run's file is here, whole and right (a retry need not fetch again)."""
        return await asyncio.to_thread(self._holds, self.path(saga_id), size, sha256)

    @staticmethod
    def _holds(path: Path, size: int, sha256: str) -> bool:
        try:
            if path.stat().st_size != size:
                return False
            with path.open("rb") as file:
                digest = hashlib.sha256()
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256

    async def remove(self, saga_id: str) -> None:
        """Remove the run's file and partial files (nothing happens if there are none)."""
        target = self.path(saga_id)

        def remove() -> None:
            target.unlink(missing_ok=True)
            self._remove_partials(target)

        await asyncio.to_thread(remove)

    def files(self) -> list[str]:
        """The fetched and partial files in the directory (for tests and operators)."""
        if not self.directory.is_dir():
            return []
        names = (entry.name for entry in os.scandir(self.directory))
        return sorted(name for name in names if name.endswith((".apk", _PARTIAL)))

    def idle_files(self, grace: timedelta) -> list[IdleFile]:
        """The runs' files (whole or partial) not modified for ``grace`` (blocking).

        Only regular files named after a run are listed: symbolic links, directories and
        other names are not (whatever their name, they are not the spool's).
        """
        cutoff = time.time() - grace.total_seconds()
        found: list[IdleFile] = []
        with self._opened() as directory:
            if directory is None:
                return []
            with os.scandir(directory) as entries:
                for entry in entries:
                    idle = _idle(entry.name, directory, cutoff)
                    if idle is not None:
                        found.append(idle)
        return sorted(found, key=lambda idle: idle.name)

    def remove_idle(self, files: Iterable[IdleFile], grace: timedelta) -> list[IdleFile]:
        """Remove those of ``files`` that are still idle regular files here (blocking).

        Each is looked at again just before it goes: one written to since it was listed (or
        replaced by something else than a regular file) stays. Names are taken relative to
        the opened directory and never followed, so nothing outside it is ever removed.

        Returns:
            The files removed.
        """
        cutoff = time.time() - grace.total_seconds()
        removed: list[IdleFile] = []
        with self._opened() as directory:
            if directory is None:
                return []
            for file in files:
                if _idle(file.name, directory, cutoff) is None:
                    continue
                try:
                    os.unlink(file.name, dir_fd=directory)
                except FileNotFoundError:
                    continue
                removed.append(file)
        return removed

    @contextmanager
    def _opened(self) -> Iterator[int | None]:
        """The directory's descriptor (None when there is no directory yet)."""
        try:
            directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            yield None
            return
        try:
            yield directory
        finally:
            os.close(directory)

    @staticmethod
    def _remove_partials(target: Path) -> None:
        if target.parent.is_dir():
            for stale in target.parent.glob(f".{target.name}.*{_PARTIAL}"):
                stale.unlink(missing_ok=True)


def _idle(name: str, directory: int, cutoff: float) -> IdleFile | None:
    """``name`` as an idle run file of ``directory``, or None (another name, busy, not a file)."""
    match = _RUN_FILE.fullmatch(name)
    if match is None:
        return None
    try:
        found = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_mtime > cutoff:
        return None
    partial = match["partial"]
    return IdleFile(name, partial or match["id"], partial is not None, found.st_size)


async def _copy(chunks: AsyncIterator[bytes], file: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    written = 0
    async for chunk in chunks:
        digest.update(chunk)
        written += len(chunk)
        await asyncio.to_thread(file.write, chunk)
    return digest.hexdigest(), written


def _sync_and_close(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()
