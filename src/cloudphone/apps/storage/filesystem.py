"""The embedded object store: files under a root directory, written atomically.

An object ``a/b/c.apk`` is the file ``<root>/a/b/c.apk``. A write copies into a hidden partial
file in the same directory (``.c.apk.<token>.part``), fsyncs it and renames it into place, so
readers see the whole object or none. Partial files left by a crash are the "pending uploads"
of this store. Keys are checked by :func:`~cloudphone.apps.storage.base.check_key` and the
resolved path must stay under the root (no ``..``, no symlink out).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudphone.apps.storage.base import (
    Download,
    InvalidObjectKeyError,
    LocalFile,
    ObjectInfo,
    PendingUpload,
    StorageError,
    check_key,
)
from cloudphone.deployment import Deployment, claim_directory

_PARTIAL_SUFFIX = ".part"


class FilesystemStorage:
    """Objects as files under ``root`` (created on start)."""

    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def __repr__(self) -> str:
        return f"FilesystemStorage({str(self.root)!r})"

    async def start(self) -> None:
        """Create the root directory."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing to release."""

    async def claim(self, deployment: Deployment) -> None:
        """Stamp the root directory (its stamp file is hidden from listings, like partials)."""
        await asyncio.to_thread(claim_directory, self.root, deployment, place="object store")

    def path_of(self, key: str) -> Path:
        """The file of ``key``, guaranteed to be inside the root.

        Raises:
            InvalidObjectKeyError: The key breaks the rules or resolves outside the root.
        """
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidObjectKeyError(f"object key {key!r} resolves outside the store")
        return path

    async def put_file(self, key: str, path: Path, *, size: int) -> None:
        """Copy ``path`` to the object's file through a partial file and an atomic rename."""
        target = self.path_of(key)
        await asyncio.to_thread(self._put, target, path, size)

    def _put(self, target: Path, source: Path, size: int) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._remove_partials(target)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}{_PARTIAL_SUFFIX}")
        try:
            with source.open("rb") as src, partial.open("xb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
                dst.flush()
                os.fsync(dst.fileno())
                written = dst.tell()
            if written != size:
                raise StorageError(f"copied {written} bytes for {target.name}, expected {size}")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and modification time, or None."""
        path = self.path_of(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def delete(self, key: str) -> None:
        """Remove the object's file and its partial files."""
        path = self.path_of(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            self._remove_partials(path)

        await asyncio.to_thread(remove)

    async def read(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's file in chunks, each read off the event loop."""
        path = self.path_of(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StorageError(f"no object {key!r}") from None
        try:
            while chunk := await asyncio.to_thread(file.read, chunk_size):
                yield chunk
        finally:
            file.close()

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects under ``prefix`` (partial files excluded), in key order."""
        for key, path in await asyncio.to_thread(self._files, prefix, partial=False):
            st = path.stat()
            yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def list_pending_uploads(self, prefix: str) -> AsyncIterator[PendingUpload]:
        """Partial files of keys under ``prefix``."""
        for key, path in await asyncio.to_thread(self._files, prefix, partial=True):
            started = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            yield PendingUpload(key, path.name, started)

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Remove one partial file."""
        directory = self.path_of(upload.key).parent
        if "/" in upload.upload_id or not upload.upload_id.endswith(_PARTIAL_SUFFIX):
            raise InvalidObjectKeyError(f"not a partial file name: {upload.upload_id!r}")
        await asyncio.to_thread((directory / upload.upload_id).unlink, missing_ok=True)

    async def download(self, key: str, *, filename: str, ttl: timedelta) -> Download:
        """The object's file, for the API to stream."""
        info = await self.stat(key)
        if info is None:
            raise StorageError(f"no object {key!r}")
        return LocalFile(self.path_of(key), info.size)

    def _files(self, prefix: str, *, partial: bool) -> list[tuple[str, Path]]:
        found = sorted(self._walk(partial))
        return [(key, path) for key, path in found if key.startswith(prefix)]

    def _walk(self, partial: bool) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(directory)
            for name in files:
                key_name = _partial_target(name) if partial else name
                if key_name is None or (not partial and name.startswith(".")):
                    continue
                yield (base / key_name).relative_to(self.root).as_posix(), base / name

    @staticmethod
    def _remove_partials(target: Path) -> None:
        if not target.parent.is_dir():
            return
        for stale in target.parent.glob(f".{target.name}.*{_PARTIAL_SUFFIX}"):
            stale.unlink(missing_ok=True)


def _partial_target(name: str) -> str | None:
    """``.c.apk.<token>.part`` → ``c.apk``; None for anything else."""
    if not (name.startswith(".") and name.endswith(_PARTIAL_SUFFIX)):
        return None
    stem, _, _token = name[1 : -len(_PARTIAL_SUFFIX)].rpartition(".")
    return stem or None


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
