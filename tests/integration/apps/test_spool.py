"""Spooled uploads: streamed to disk, hashed, locked while received, swept once their saga ends."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from datetime import timedelta
from pathlib import Path

from cloudphone.apps.config import AppsConfig
from cloudphone.apps.spool import UploadSpool
from cloudphone.domain import Principal
from tests.support.apps_harness import MakeApps, apk, chunks_of, sha256
from tests.support.waiting import eventually


def age(path: Path, seconds: float = 600) -> None:
    """Pretend the file was last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_receive_hashes_and_counts_while_streaming(tmp_path: Path) -> None:
    spool = UploadSpool(tmp_path / "spool")
    data = os.urandom(3 * 1024 * 1024 + 17)
    spooled = await spool.receive(chunks_of(data, 100_000), max_bytes=len(data))
    try:
        assert (spooled.size, spooled.sha256) == (len(data), sha256(data))
        assert spooled.path.read_bytes() == data
        assert spooled.path.stat().st_mode & 0o777 == 0o600
    finally:
        spooled.discard()
    assert not spooled.path.exists()


async def test_sweep_removes_files_of_finished_or_unknown_sagas_only(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    apps = await make_apps()
    running = await apps.upload(user, apk(package, 1))  # no worker: its saga stays PENDING
    (kept_for_saga,) = apps.spooled()
    leftover = apps.spool.directory / ("a" * 32 + ".apk")  # e.g. left by a crash
    receiving = apps.spool.directory / ("b" * 32 + ".apk")  # a receiver holds it
    fresh = apps.spool.directory / ("c" * 32 + ".apk")  # just created, not locked yet
    stranger = apps.spool.directory / "notes.txt"  # not a spool file
    for path in (leftover, receiving, fresh, stranger):
        path.write_bytes(b"x")
    for path in (apps.spool.directory / kept_for_saga, leftover, receiving, stranger):
        age(path)
    with receiving.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = await apps.service.sweep_spool()
    assert removed == [leftover.name]
    assert sorted(apps.spooled()) == sorted(
        [kept_for_saga, receiving.name, fresh.name, stranger.name]
    )
    async with apps.engine.worker():
        await apps.engine.wait(running.saga_id, timeout=timedelta(seconds=30))
    assert kept_for_saga not in apps.spooled()  # the saga's last step removed it


async def test_sweep_after_a_crash_removes_files_of_finished_sagas(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    apps = await make_apps()
    accepted = await apps.upload(user, apk(package, 1))
    (name,) = apps.spooled()
    copy = (apps.spool.directory / name).read_bytes()
    async with apps.engine.worker():
        await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    (apps.spool.directory / name).write_bytes(copy)  # as if the removal was lost in a crash
    age(apps.spool.directory / name)
    assert await apps.service.sweep_spool() == [name]
    assert apps.spooled() == []


async def test_housekeeping_sweeps_on_start_then_every_interval_until_stopped(
    make_apps: MakeApps,
) -> None:
    """One sweep before start returns, then one every interval; stop leaves no task behind."""
    apps = await make_apps(config=AppsConfig(temp_sweep_interval=timedelta(milliseconds=50)))
    apps.spool.directory.mkdir(parents=True, exist_ok=True)
    first, later = (apps.spool.directory / (c * 32 + ".apk") for c in "de")
    first.write_bytes(b"x")
    age(first)
    before = asyncio.all_tasks()
    await apps.service.start_housekeeping()
    try:
        assert first.name not in apps.spooled()
        later.write_bytes(b"x")
        age(later)

        async def spooled() -> list[str]:
            return list(apps.spooled())

        await eventually(spooled, lambda names: later.name not in names, what="a later sweep")
    finally:
        await apps.service.stop_housekeeping()
    assert asyncio.all_tasks() <= before  # stopped: the sweeper's task is gone


def test_spool_names_cannot_point_outside(tmp_path: Path) -> None:
    spool = UploadSpool(tmp_path)
    for bad in ("../x.apk", "/etc/passwd", "a" * 31 + ".apk", "A" * 32 + ".apk", ""):
        try:
            spool.path(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
