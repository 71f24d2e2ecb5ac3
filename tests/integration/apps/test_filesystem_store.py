"""The filesystem store: atomic writes under its root, and nothing outside the root, ever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudphone.apps.storage.base import InvalidObjectKeyError, StorageError
from cloudphone.apps.storage.filesystem import FilesystemStorage


@pytest.fixture
async def store(tmp_path: Path) -> FilesystemStorage:
    storage = FilesystemStorage(tmp_path / "root")
    await storage.start()
    return storage


CONTENT = os.urandom(10_000)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(CONTENT)
    return path


async def test_a_symlink_inside_the_root_cannot_lead_outside(
    store: FilesystemStorage, source: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "apps").mkdir()
    (store.root / "apps" / "link").symlink_to(outside)
    with pytest.raises(InvalidObjectKeyError):
        await store.put_file("apps/link/x.apk", source, size=10_000)
    assert list(outside.iterdir()) == []


async def test_nothing_is_written_outside_the_root(
    store: FilesystemStorage, source: Path, tmp_path: Path
) -> None:
    for key in ("../x.apk", "apps/../../x.apk", "/tmp/x.apk"):
        with pytest.raises(InvalidObjectKeyError):
            await store.put_file(key, source, size=10_000)
    assert sorted(os.listdir(tmp_path)) == ["root", "source.bin"]


async def test_a_short_copy_leaves_no_object_and_no_partial(
    store: FilesystemStorage, source: Path
) -> None:
    with pytest.raises(StorageError, match="expected"):
        await store.put_file("apps/p/1/x.apk", source, size=10_001)
    assert await store.stat("apps/p/1/x.apk") is None
    assert [u async for u in store.list_pending_uploads("apps/")] == []


async def test_a_crashed_write_is_a_pending_upload_until_aborted_or_replaced(
    store: FilesystemStorage, source: Path
) -> None:
    directory = store.root / "apps" / "p" / "1"
    directory.mkdir(parents=True)
    (directory / ".x.apk.0123456789abcdef.part").write_bytes(b"half")
    pending = [u async for u in store.list_pending_uploads("apps/")]
    assert [(u.key, u.upload_id) for u in pending] == [
        ("apps/p/1/x.apk", ".x.apk.0123456789abcdef.part")
    ]
    assert [o async for o in store.list_objects("apps/")] == []  # never listed as an object
    await store.put_file("apps/p/1/x.apk", source, size=10_000)  # a retry clears it
    assert [u async for u in store.list_pending_uploads("apps/")] == []
    (directory / ".x.apk.fedcba9876543210.part").write_bytes(b"half")
    (pending,) = [u async for u in store.list_pending_uploads("apps/")]
    await store.abort_pending_upload(pending)
    assert [u async for u in store.list_pending_uploads("apps/")] == []
    assert (directory / "x.apk").read_bytes() == CONTENT
