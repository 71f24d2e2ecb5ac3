"""The install spool: a fetched APK is whole and right under its name, or not there at all."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.installs.spool import ApkSpool, ChecksumMismatchError

DATA = b"PK\x03\x04" + bytes(range(256)) * 500


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """``data`` as a stream."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_matching_stream_is_kept_and_recognised(tmp_path: Path) -> None:
    """Size and SHA-256 match: the file is there, ``holds`` says so, ``remove`` takes it."""
    spool, saga_id = ApkSpool(tmp_path / "spool"), str(uuid.uuid4())
    digest = hashlib.sha256(DATA).hexdigest()
    path = await spool.receive(saga_id, chunks(DATA), size=len(DATA), sha256=digest)
    assert path.read_bytes() == DATA
    assert spool.files() == [f"{saga_id}.apk"]
    assert await spool.holds(saga_id, size=len(DATA), sha256=digest)
    assert not await spool.holds(saga_id, size=len(DATA), sha256="0" * 64)
    await spool.remove(saga_id)
    await spool.remove(saga_id)
    assert spool.files() == []


async def test_a_stream_that_does_not_match_leaves_nothing(tmp_path: Path) -> None:
    """Wrong bytes (or a short stream): refused, no file under the name, no partial file."""
    spool, saga_id = ApkSpool(tmp_path / "spool"), str(uuid.uuid4())
    digest = hashlib.sha256(DATA).hexdigest()
    with pytest.raises(ChecksumMismatchError, match="the record says"):
        await spool.receive(saga_id, chunks(DATA[:-1]), size=len(DATA), sha256=digest)
    assert spool.files() == []
    assert not await spool.holds(saga_id, size=len(DATA), sha256=digest)


async def test_a_broken_stream_leaves_nothing(tmp_path: Path) -> None:
    """The source fails half-way: its error comes through and no partial file stays."""
    spool, saga_id = ApkSpool(tmp_path / "spool"), str(uuid.uuid4())

    async def broken() -> AsyncIterator[bytes]:
        yield DATA[:1000]
        raise ConnectionError("store went away")

    with pytest.raises(ConnectionError):
        await spool.receive(saga_id, broken(), size=len(DATA), sha256="0" * 64)
    assert spool.files() == []


def test_only_run_ids_name_files(tmp_path: Path) -> None:
    """A name from saga data that is not a run id cannot point outside the spool."""
    spool = ApkSpool(tmp_path)
    for bad in ("../../etc/passwd", "x", "", "a" * 36 + "/"):
        with pytest.raises(ValueError, match="not a saga id"):
            spool.path(bad)
