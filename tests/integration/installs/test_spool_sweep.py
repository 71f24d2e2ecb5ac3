"""The install spool's sweeper: files of finished or unknown runs go, the others stay.

Real platforms (built by ``cloudphone.platform``) on SQLite and PostgreSQL, real local devices,
real files in the worker's spool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.installs.spool import ApkSpool
from cloudphone.installs.sweep import SpoolSweeper
from cloudphone.saga import NonRetryableError, StepContext
from cloudphone.saga.testing import FaultInjector
from cloudphone.settings import SettingsError, load_settings
from tests.support.devices_stack import make_config
from tests.support.installs_stack import Installs, install_settings, packages, started, user
from tests.support.waiting import eventually

REMOVED = "install_spool_files_removed_total"


def _plant(spool: ApkSpool, name: str, *, age: float = 3600) -> Path:
    """A file in the spool, untouched for ``age`` seconds (0: written now)."""
    path = spool.directory / name
    path.write_bytes(b"PK\x03\x04 left behind")
    if age:
        _age(path, age)
    return path


def _age(path: Path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _sweeper(installs: Installs) -> SpoolSweeper:
    sweeper = installs.platform.install_spool_sweeper
    assert sweeper is not None, "a platform with a worker sweeps its install spool"
    return sweeper


def _removed(installs: Installs, reason: str) -> float | None:
    return installs.platform.registry.get_sample_value(REMOVED, {"reason": reason})


async def test_files_of_finished_and_unknown_runs_go_and_the_others_stay(
    installs: Installs,
    faults: FaultInjector,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """COMPLETED and FAILED runs' (and unknown runs') old files go; a RUNNING run's stays.

    So do a fresh file, names that are no run's, a symbolic link and what it points to; and
    an operator's forward retry of the FAILED run fetches the APK again and completes.
    """
    ann = user(f"ann-{unique}")
    device = await installs.device(ann)
    done_app, failed_app, busy_app = [
        await installs.app(ann, f"com.t{unique}.{name}", 1) for name in ("done", "failed", "busy")
    ]
    done = await installs.installed(ann, device, done_app)
    assert installs.spool_files() == []  # PUSH_AND_INSTALL removed its own file

    # The pivot fails for good and so does its undoing: FETCH_APK's compensation never runs.
    faults.fail("PUSH_AND_INSTALL", error=NonRetryableError("refused"), saga="app_install")
    faults.fail(
        "PUSH_AND_INSTALL",
        error=NonRetryableError("device gone mid-undo"),
        compensating=True,
        saga="app_install",
    )
    failed = await installs.saga(
        ann, (await installs.install(ann, device, failed_app)).json()["saga_id"]
    )
    assert failed["status"] == "FAILED", failed
    assert installs.spool_files() == [f"{failed['id']}.apk"]

    release = asyncio.Event()

    async def held(_ctx: StepContext[Any]) -> None:
        await release.wait()

    faults.add("PUSH_AND_INSTALL", held, saga="app_install")
    busy_id = (await installs.install(ann, device, busy_app)).json()["saga_id"]

    async def pushing() -> bool:
        return any(c.saga_id == busy_id and c.step == "PUSH_AND_INSTALL" for c in faults.calls)

    await eventually(pushing, bool, what="the busy install waiting in its pivot")
    assert (await installs.platform.engine.get(busy_id)).status.value == "RUNNING"

    spool = ApkSpool(installs.platform.settings.data_dir / "installs")
    for name in (f"{failed['id']}.apk", f"{busy_id}.apk"):
        _age(spool.directory / name)
    leftovers = {
        _plant(spool, f"{done['id']}.apk").name,  # another host finished it; this one crashed
        _plant(spool, f".{done['id']}.apk.0123456789ab.part").name,
        _plant(spool, f"{uuid.uuid4()}.apk").name,  # no such run
        f"{failed['id']}.apk",
    }
    kept = {
        f"{busy_id}.apk",
        _plant(spool, f"{uuid.uuid4()}.apk", age=0).name,
        _plant(spool, "notes.apk").name,
        _plant(spool, f"{done['id']}.apk.bak").name,
    }
    outside = tmp_path / "outside.apk"
    outside.write_bytes(b"PK\x03\x04 not the spool's")
    _age(outside)
    link = spool.directory / f"{uuid.uuid4()}.apk"
    link.symlink_to(outside)
    _age(link)

    assert (_removed(installs, "finished"), _removed(installs, "unknown")) == (0, 0)
    with caplog.at_level(logging.INFO, logger="cloudphone.installs"):
        removed = await _sweeper(installs).sweep()
    assert {file.name for file in removed} == leftovers
    [line] = [r for r in caplog.records if "install spool files" in r.getMessage()]
    assert line.getMessage() == "removed 4 install spool files no run needs any more"
    assert (getattr(line, "finished", None), getattr(line, "unknown", None)) == (3, 1)
    assert set(os.listdir(spool.directory)) == kept | {link.name}
    assert outside.exists()
    assert link.is_symlink()
    assert (_removed(installs, "finished"), _removed(installs, "unknown")) == (3, 1)
    assert await _sweeper(installs).sweep() == []

    await installs.platform.engine.retry(failed["id"], forward=True, actor="ops")
    retried = await installs.saga(ann, failed["id"])
    assert retried["status"] == "COMPLETED", retried
    assert await packages(device, f"com.t{unique}.failed") == (
        f"package:com.t{unique}.failed versionCode:1\n"
    )
    release.set()
    assert (await installs.saga(ann, busy_id))["status"] == "COMPLETED"
    assert set(os.listdir(spool.directory)) == kept - {f"{busy_id}.apk"} | {link.name}


async def test_a_started_worker_sweeps_at_start_and_then_periodically(
    installs_url: str, tmp_path: Path, unique: str
) -> None:
    """A file left before start is gone once the platform started; a later one soon after."""
    every = timedelta(milliseconds=100)
    devices = make_config(sweep_interval=timedelta(0), install_spool_sweep_interval=every)
    settings = install_settings(installs_url, tmp_path / "var", f"w-{unique}", devices=devices)
    spool = ApkSpool(settings.data_dir / "installs")
    spool.directory.mkdir(parents=True)
    before = _plant(spool, f"{uuid.uuid4()}.apk")
    fresh = _plant(spool, f"{uuid.uuid4()}.apk", age=0)
    async with started(settings) as installs:
        assert not before.exists()
        assert _sweeper(installs).running
        later = _plant(spool, f"{uuid.uuid4()}.apk")

        async def removed() -> float | None:
            # Counted once the sweep's thread is back, a moment after the file is gone.
            return _removed(installs, "unknown")

        await eventually(removed, lambda n: n == 2, what="the periodic sweep")
        assert not later.exists()
        assert fresh.exists()
    assert not _sweeper(installs).running


async def test_a_process_without_a_worker_leaves_the_spool_alone(
    installs_url: str, tmp_path: Path, unique: str
) -> None:
    """``serve --no-worker`` runs no installs, hence no sweeper either."""
    settings = install_settings(installs_url, tmp_path / "var", f"w-{unique}")
    spool = ApkSpool(settings.data_dir / "installs")
    spool.directory.mkdir(parents=True)
    left = _plant(spool, f"{uuid.uuid4()}.apk")
    async with started(settings, with_worker=False) as installs:
        assert installs.platform.install_spool_sweeper is None
    assert left.exists()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("INSTALL_SPOOL_SWEEP_INTERVAL", "soon", "is not a duration"),
        ("INSTALL_SPOOL_SWEEP_INTERVAL", "-PT5S", "greater than or equal to 0 seconds"),
        ("INSTALL_SPOOL_SWEEP_INTERVAL", "2d", "less than or equal to 1 day"),
        ("INSTALL_SPOOL_GRACE", "0", "greater than or equal to 1 second"),
    ],
)
def test_bad_sweep_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, reason: str
) -> None:
    """The variable and why: nothing starts on a sweep setting it cannot use."""
    name = f"CLOUDPHONE_DEVICES__{variable}"
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings(data_dir=tmp_path, jwt_secret="x" * 40)
    message = str(refused.value)
    assert name in message
    assert reason in message


def test_sweep_settings_read_durations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``1h`` is an hour; 0 (a sweep at start only) is allowed."""
    monkeypatch.setenv("CLOUDPHONE_DEVICES__INSTALL_SPOOL_SWEEP_INTERVAL", "0")
    monkeypatch.setenv("CLOUDPHONE_DEVICES__INSTALL_SPOOL_GRACE", "1h")
    devices = load_settings(data_dir=tmp_path, jwt_secret="x" * 40).devices
    assert devices.install_spool_sweep_interval == timedelta(0)
    assert devices.install_spool_grace == timedelta(hours=1)
