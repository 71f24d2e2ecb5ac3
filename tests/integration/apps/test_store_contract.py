"""Every object store adapter keeps the port's promises (run against each adapter)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.apps.storage.base import (
    InvalidObjectKeyError,
    LocalFile,
    ObjectStorage,
    PresignedUrl,
    StorageError,
    StorageUnavailableError,
)
from tests.support.apps_harness import fetch_bytes, sha256

SIZE = 300_000
CONTENT = os.urandom(SIZE)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(CONTENT)
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "smaller.bin"
    path.write_bytes(b"v2")
    return path


async def test_put_stat_list_and_delete(storage: ObjectStorage, source: Path, unique: str) -> None:
    key = f"apps/c{unique}/1/a.apk"
    assert await storage.stat(key) is None
    await storage.put_file(key, source, size=SIZE)
    stored = await storage.stat(key)
    assert stored is not None
    assert (stored.key, stored.size) == (key, SIZE)
    listed = [o.key async for o in storage.list_objects(f"apps/c{unique}/")]
    assert listed == [key]
    await storage.delete(key)
    await storage.delete(key)  # deleting what is gone succeeds
    assert await storage.stat(key) is None
    assert [o async for o in storage.list_objects(f"apps/c{unique}/")] == []


async def test_put_again_replaces_the_object(
    storage: ObjectStorage, source: Path, small: Path, unique: str
) -> None:
    key = f"apps/c{unique}/1/b.apk"
    await storage.put_file(key, source, size=SIZE)
    await storage.put_file(key, small, size=2)
    stored = await storage.stat(key)
    assert stored is not None
    assert stored.size == 2
    assert [u async for u in storage.list_pending_uploads(f"apps/c{unique}/")] == []


async def test_download_gives_the_bytes(storage: ObjectStorage, source: Path, unique: str) -> None:
    key = f"apps/c{unique}/1/c.apk"
    await storage.put_file(key, source, size=SIZE)
    target = await storage.download(key, filename="c.apk", ttl=timedelta(minutes=1))
    if isinstance(target, LocalFile):
        data = await asyncio.to_thread(target.path.read_bytes)
    else:
        assert isinstance(target, PresignedUrl)
        data = await fetch_bytes(target.url)
    assert sha256(data) == sha256(CONTENT)


async def test_read_streams_the_bytes_in_chunks(
    storage: ObjectStorage, source: Path, unique: str
) -> None:
    """``read`` gives the object back in chunks of at most the size asked; missing: an error."""
    key = f"apps/c{unique}/1/r.apk"
    await storage.put_file(key, source, size=SIZE)
    chunks = [chunk async for chunk in storage.read(key, chunk_size=64 * 1024)]
    assert b"".join(chunks) == CONTENT
    assert len(chunks) >= SIZE // (64 * 1024)
    assert all(len(chunk) <= 64 * 1024 for chunk in chunks)
    with pytest.raises(StorageError, match="no object") as raised:
        [chunk async for chunk in storage.read(f"apps/c{unique}/1/missing.apk")]
    assert not isinstance(raised.value, StorageUnavailableError)


@pytest.mark.parametrize(
    "key",
    ["../escape.apk", "apps/../../escape.apk", "/etc/passwd", "apps//x", "apps/./x", "apps/.x",
     "apps/x\\..\\y", "apps/x\x00", "", "a/" * 600],
)  # fmt: skip
async def test_keys_that_could_escape_are_refused(
    storage: ObjectStorage, source: Path, key: str
) -> None:
    with pytest.raises(InvalidObjectKeyError):
        await storage.put_file(key, source, size=SIZE)
    with pytest.raises(InvalidObjectKeyError):
        await storage.delete(key)
