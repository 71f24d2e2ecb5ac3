"""Installs whose APKs live in S3 (a real SeaweedFS): fetched and checked; an outage undone.

The server is killed by pid after the upload: every FETCH_APK attempt fails, is retried, and
then the run compensates: no row, no spool file, nothing on the device. Back again, the same
application installs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudphone.saga import EventKind
from tests.support.apps_s3 import WeedServer
from tests.support.installs_stack import Installs, install_settings, packages, started, user


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[WeedServer]:
    """A SeaweedFS of this test's own, to stop and start again."""
    server = WeedServer(tmp_path / "weed")
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
async def installs(
    installs_url: str, tmp_path: Path, unique: str, weed: WeedServer
) -> AsyncIterator[Installs]:
    """A started platform keeping its APKs in the test's SeaweedFS."""
    settings = install_settings(
        installs_url, tmp_path / "var", f"w-{unique}", s3=(weed.endpoint, f"i{unique}/")
    )
    async with started(settings) as built:
        yield built


async def test_storage_down_during_fetch_retries_then_undoes_everything(
    installs: Installs, weed: WeedServer, unique: str
) -> None:
    """Killed S3: FETCH_APK fails every attempt, the run compensates and leaves nothing."""
    ann = user(f"ann-{unique}")
    package = f"com.t{unique}.notes"
    device = await installs.device(ann)
    app = await installs.app(ann, package, 4)
    weed.stop(kill=True)

    posted = await installs.install(ann, device, app)
    assert posted.status_code == 202, posted.text
    run = await installs.saga(ann, posted.json()["saga_id"])
    assert run["status"] == "COMPENSATED", run
    assert run["error"]["step"] == "FETCH_APK"
    history = await installs.platform.engine.history(run["id"])
    failures = [e for e in history if e.kind is EventKind.STEP_FAILED and e.step == "FETCH_APK"]
    assert len(failures) == installs.platform.settings.devices.retry_max_attempts
    assert [e.step for e in history if e.kind is EventKind.COMPENSATION_SUCCEEDED] == [
        "FETCH_APK",
        "RESERVE_INSTALLATION",
    ]
    assert await installs.listing(ann, device) == []
    assert installs.spool_files() == []
    assert await packages(device, package) == ""

    weed.start()
    await installs.installed(ann, device, app)
    assert await packages(device, package) == f"package:{package} versionCode:4\n"
    [row] = await installs.listing(ann, device)
    assert (row["status"], row["version_code"]) == ("INSTALLED", 4)
    assert installs.spool_files() == []
