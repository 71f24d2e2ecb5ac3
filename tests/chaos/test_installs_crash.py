"""app_install with its worker process SIGKILLed in FETCH_APK and in PUSH_AND_INSTALL.

Each worker is a child process running the whole platform (``tests.support.installs_worker``),
killed right after the step's action, before its commit; a second worker takes the run over.
It finishes: the app is on the device once (a retried push asks the device first, so the
package installed by the dead worker is not installed again) and recorded INSTALLED. Or,
its attempts failing, it is undone: no row, no spool file, no package on the device, not even
the one the dead worker installed. On SQLite and PostgreSQL, local devices over real ADB.

The test process creates the device (its agent is the test's child, so it outlives the
workers) and uploads the APK with a worker of its own, stopped before the install starts.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.saga import EventKind, SagaStatus
from tests.support.installs_stack import (
    DATABASES,
    Installs,
    adb_shell,
    chosen_database,
    install_settings,
    migrated_database,
    packages,
    started,
    user,
)
from tests.support.installs_worker import InstallWorkers

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def chaos_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own, migrated by the platforms."""
    yield from migrated_database("cloudphone_install_chaos")


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, or the module's PostgreSQL database."""
    return chosen_database(request, tmp_path, "chaos_postgres_url")


@pytest.fixture
async def installs(url: str, tmp_path: Path, unique: str) -> AsyncIterator[Installs]:
    """The test's platform: API and reads; its worker runs only while the test asks."""
    settings = install_settings(url, tmp_path / "var", f"api-{unique}")
    async with started(settings, with_worker=False) as built:
        yield built


@pytest.fixture
def workers(url: str, tmp_path: Path) -> Iterator[InstallWorkers]:
    """Worker children on the same database and data directory; all SIGKILLed at the end."""
    pool = InstallWorkers(url, tmp_path / "var", tmp_path)
    yield pool
    pool.close()


async def device_and_app(installs: Installs, who: dict[str, str], package: str) -> Any:
    """A RUNNING device and an AVAILABLE APK, made by a worker in the test process."""
    async with installs.platform.engine.worker(concurrency=4, grace=timedelta(seconds=5)):
        device = await installs.device(who)
        app = await installs.app(who, package, 6)
    return device, app


@pytest.mark.parametrize("step", ["FETCH_APK", "PUSH_AND_INSTALL"])
@pytest.mark.parametrize("outcome", ["finishes", "is_undone"])
async def test_worker_killed_mid_install(
    installs: Installs, workers: InstallWorkers, unique: str, step: str, outcome: str
) -> None:
    """Killed after the step acted, before it committed: installed once, or nothing left."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device, app = await device_and_app(installs, ann, package)

    first = await workers.start(f"a-{unique}", crash_after=[step])
    posted = await installs.install(ann, device, app)
    assert posted.status_code == 202, posted.text
    saga_id = posted.json()["saga_id"]
    assert await first.exited() == -signal.SIGKILL, workers.logs()
    [row] = await installs.listing(ann, device)
    assert row["status"] == "INSTALLING"
    left_by_the_dead = await packages(device, package)
    code_path = await adb_shell(device, f"pm path {package}")
    if step == "PUSH_AND_INSTALL":  # installed (and its spool file gone), not recorded
        assert left_by_the_dead == f"package:{package} versionCode:6\n"
        assert installs.spool_files() == []
    else:
        assert left_by_the_dead == ""
        assert installs.spool_files() == [f"{saga_id}.apk"]  # fetched whole, not recorded

    recovery = {"fail": ["PUSH_AND_INSTALL"]} if outcome == "is_undone" else {}
    await workers.start(f"b-{unique}", **recovery)
    run = await installs.platform.engine.wait(saga_id, timeout=timedelta(seconds=60))
    history = await installs.platform.engine.history(saga_id)
    assert any(e.kind is EventKind.LEASE_TAKEOVER for e in history), workers.logs()
    assert installs.spool_files() == []

    if outcome == "finishes":
        assert run.status is SagaStatus.COMPLETED, (run.error, workers.logs())
        assert await packages(device, package) == f"package:{package} versionCode:6\n"
        [row] = await installs.listing(ann, device)
        assert (row["status"], row["version_code"], row["saga_id"]) == ("INSTALLED", 6, saga_id)
        pushed = run.outputs["PUSH_AND_INSTALL"]
        if step == "PUSH_AND_INSTALL":
            assert pushed == {"already_installed": True}  # asked the device, did not reinstall
            assert await adb_shell(device, f"pm path {package}") == code_path
        else:
            assert pushed == {"already_installed": False}
    else:
        assert run.status is SagaStatus.COMPENSATED, (run.error, workers.logs())
        assert await installs.listing(ann, device) == []
        assert await packages(device, package) == ""  # the dead worker's install undone too
