"""Helpers of the S3 adapter: a seekable window over a file, and error translation.

:class:`PartReader` lets botocore hash and sign a multipart part and aiohttp stream it straight
from the spooled file, so memory stays flat whatever the part size (passing ``bytes`` costs
about three times the part size per part in flight).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from cloudphone.apps.storage.base import StorageError, StorageUnavailableError

TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "RequestTimeTooSkewed"}
)
"""S3 error codes worth retrying (5xx answers are retried too)."""


class PartReader(io.RawIOBase):
    """A read-only, seekable window ``[offset, offset + length)`` of a file.

    botocore needs ``seek``/``tell`` (to measure the body and rewind it on a retry); a plain
    generator would not do.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def tell(self) -> int:
        """Position inside the window."""
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        """Move inside the window (clamped to it)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + position))
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Read from the window into ``buffer``."""
        count = min(len(buffer), self._length - self._position)
        if count <= 0:
            return 0
        self._file.seek(self._offset + self._position)
        read = self._file.readinto(memoryview(buffer)[:count])
        self._position += read
        return read

    def close(self) -> None:
        """Close the file."""
        self._file.close()
        super().close()


def error_code(error: ClientError) -> str:
    """The S3 error code of a client error (the HTTP status when there is no code)."""
    response = error.response
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    return str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown"))


def http_status(error: ClientError) -> int:
    """The HTTP status of a client error (0 if unknown)."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


@asynccontextmanager
async def translated(action: str, key: str) -> AsyncIterator[None]:
    """Turn botocore errors into the port's errors, naming the action and key.

    Connection problems, timeouts, 5xx answers and throttling become
    :class:`StorageUnavailableError` (retry later); other answers :class:`StorageError`.
    """
    try:
        yield
    except BotoCoreError as error:
        raise StorageUnavailableError(f"{action} {key}: {type(error).__name__}: {error}") from error
    except ClientError as error:
        code = error_code(error)
        if http_status(error) >= 500 or code in TRANSIENT_CODES:
            raise StorageUnavailableError(f"{action} {key}: S3 answered {code}") from error
        raise StorageError(f"{action} {key}: S3 answered {code}") from error
