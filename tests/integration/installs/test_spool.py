"""The install spool: a fetched APK is whole and right under its name, or not there at all."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.installs.spool import ApkSpool, ChecksumMismatchError, IdleFile

DATA = b"PK\x03\x04" + bytes(range(256)) * 500
NOT_RUN_FILES = ("notes.txt", "not-a-run.apk", f"{uuid.uuid4()}.apk.bak", f".{uuid.uuid4()}.apk")
"""Names in the spool directory that are no run's file (kept whatever their age)."""


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


def _age(path: Path, seconds: float = 3600) -> None:
    """Make ``path`` (itself, never a link's target) look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_only_idle_regular_run_files_are_listed(tmp_path: Path) -> None:
    """Whole and partial files of runs, untouched for the grace; nothing else, whatever its age."""
    spool = ApkSpool(tmp_path / "spool")
    assert spool.idle_files(timedelta(minutes=10)) == []  # no directory yet
    spool.directory.mkdir()
    run, other, linked, folder = (str(uuid.uuid4()) for _ in range(4))
    whole, partial = spool.path(run), spool.directory / f".{run}.apk.0123456789ab.part"
    fresh = spool.path(other)
    outside = tmp_path / "outside.apk"
    for path in (whole, partial, fresh, outside, *(spool.directory / n for n in NOT_RUN_FILES)):
        path.write_bytes(DATA)
    (spool.directory / f"{linked}.apk").symlink_to(outside)
    (spool.directory / f"{folder}.apk").mkdir()
    for path in spool.directory.iterdir():
        if path != fresh:
            _age(path)
    _age(outside)

    idle = spool.idle_files(timedelta(minutes=10))
    assert [(f.name, f.saga_id, f.partial, f.size) for f in idle] == sorted(
        [(partial.name, run, True, len(DATA)), (whole.name, run, False, len(DATA))]
    )
    assert [f.name for f in spool.idle_files(timedelta(hours=2))] == []


def test_removing_idle_files_spares_what_changed_and_never_leaves_the_directory(
    tmp_path: Path,
) -> None:
    """A file written to since it was listed stays; a forged name cannot reach another file."""
    spool = ApkSpool(tmp_path / "spool")
    spool.directory.mkdir()
    kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for saga_id in (kept, gone):
        spool.path(saga_id).write_bytes(DATA)
        _age(spool.path(saga_id))
    victim = tmp_path / f"{gone}.apk"
    victim.write_bytes(DATA)
    _age(victim)
    listed = spool.idle_files(timedelta(minutes=10))
    spool.path(kept).write_bytes(DATA)  # a fetch wrote it again meanwhile
    forged = IdleFile(f"../{gone}.apk", gone, partial=False, size=0)

    removed = spool.remove_idle([*listed, forged], timedelta(minutes=10))
    assert [f.name for f in removed] == [f"{gone}.apk"]
    assert spool.files() == [f"{kept}.apk"]
    assert victim.read_bytes() == DATA
    assert spool.remove_idle(listed, timedelta(minutes=10)) == []  # already gone: no error
