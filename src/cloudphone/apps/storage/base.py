"""The object storage port: what the apps service needs from a blob store, and its errors.

Keys are relative, ``/``-separated paths of segments made of letters, digits, ``.``, ``_``
and ``-``; no segment is empty, ``.`` or ``..``, or starts with a dot. Every adapter validates
them with :func:`check_key`, so a key can never name something outside the store.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudphone.deployment import Deployment

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 200
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class StorageError(Exception):
    """The store refused or failed an operation (its message names the key, never secrets)."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached or timed out; the same call may succeed later."""


class InvalidObjectKeyError(StorageError, ValueError):
    """A key breaks the key rules (it could escape the store's root or bucket prefix)."""


def check_key(key: str) -> str:
    """Return ``key`` if it follows the key rules.

    Raises:
        InvalidObjectKeyError: The key is empty, too long, absolute, or has a bad segment.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidObjectKeyError(f"object key must be 1-{MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if len(segment) > MAX_SEGMENT_LENGTH or not _SEGMENT.fullmatch(segment):
            raise InvalidObjectKeyError(f"object key {key!r} has an invalid segment")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object.

    Attributes:
        key: Its key.
        size: Bytes.
        modified_at: Last write, when the store reports it.
    """

    key: str
    size: int
    modified_at: datetime | None = None


@dataclass(frozen=True)
class PendingUpload:
    """A write that started and never finished (an S3 multipart upload, a partial file).

    Attributes:
        key: The key it was writing.
        upload_id: The store's handle for it (multipart upload id, partial file name).
        started_at: When it began, when known.
    """

    key: str
    upload_id: str
    started_at: datetime | None = None


@dataclass(frozen=True)
class PresignedUrl:
    """A URL that grants a GET of one object until ``expires_at``, made on request."""

    url: str
    expires_at: datetime


@dataclass(frozen=True)
class LocalFile:
    """An object the API can stream from this host's disk."""

    path: Path
    size: int


Download = PresignedUrl | LocalFile
"""How a client gets an object's bytes."""


class ObjectStorage(Protocol):
    """A blob store holding the APKs.

    Implementations: :class:`~cloudphone.apps.storage.filesystem.FilesystemStorage` (embedded
    default) and :class:`~cloudphone.apps.storage.s3.S3Storage`. Every method is safe to
    repeat: a retried ``put_file`` replaces the object and clears its earlier unfinished
    writes, and ``delete`` of a missing key succeeds.
    """

    name: str
    """Short adapter name (``filesystem``, ``s3``), for logs and health reports."""

    async def start(self) -> None:
        """Prepare the store (create the root or bucket when allowed)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def claim(self, deployment: Deployment) -> None:
        """Make the store (root directory, bucket prefix) ``deployment``'s, at start.

        Raises:
            DeploymentMismatchError: Another deployment's objects live there; listing them
                would take them for orphans.
        """
        ...

    async def put_file(self, key: str, path: Path, *, size: int) -> None:
        """Store the file at ``path`` (``size`` bytes) under ``key``, replacing any object.

        The object appears whole or not at all. Earlier unfinished writes of ``key`` are
        discarded first, so a retry leaves no leftovers.
        """
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object under ``key``, or None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under ``key`` and any unfinished write of it (idempotent)."""
        ...

    def read(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The bytes of the object under ``key``, streamed in chunks (never held whole).

        Raises (while iterating):
            StorageError: There is no object under ``key``.
            StorageUnavailableError: The store cannot be reached, or the stream broke.
        """
        ...

    def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def list_pending_uploads(self, prefix: str) -> AsyncIterator[PendingUpload]:
        """Every unfinished write whose key starts with ``prefix``."""
        ...

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Discard one unfinished write (idempotent)."""
        ...

    async def download(self, key: str, *, filename: str, ttl: timedelta) -> Download:
        """How a client can fetch ``key``: a presigned URL valid for ``ttl``, or a local file.

        Raises:
            StorageError: There is no object under ``key`` (local stores only check this).
        """
        ...
