"""app_upload with its worker process SIGKILLed mid-saga: recovery finishes or compensates.

A child worker is killed at a chosen point (after a step's action, before its commit; in the
middle of a multipart upload; while compensating), then a new worker with the same id takes the
run back. Whatever the point: the saga ends COMPLETED or COMPENSATED, record and object agree,
no spooled file remains, and reconcile finds nothing. On SQLite and PostgreSQL, on the
filesystem store and on S3 (SeaweedFS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.apps.models import AppStatus
from cloudphone.apps.storage.base import ObjectStorage
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.apps.upload import STEPS
from cloudphone.domain import Principal
from cloudphone.saga import SagaStatus
from tests.support.apps_harness import Apps, apk, build_apps, package_for, sha256
from tests.support.apps_s3 import PART_SIZE, WeedServer, s3_storage
from tests.support.apps_worker import AppsWorkers
from tests.support.processes import Option, WorkerProcess

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def store_args(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> list[str]:
    """How the test and its worker children reach the same store (``filesystem`` or ``s3``).

    Each test names the stores it runs on: only what touches the store runs on both.
    """
    if request.param == "s3":
        server: WeedServer = request.getfixturevalue("weed")
        return ["--s3-endpoint", server.endpoint, "--s3-prefix", f"c{unique}/"]
    return ["--fs-root", str(tmp_path / "objects")]


@pytest.fixture
async def apps(
    database_url: str, unique: str, tmp_path: Path, store_args: list[str]
) -> AsyncIterator[Apps]:
    """The test's side: accepts uploads and reads state; no worker of its own."""
    storage: ObjectStorage
    if store_args[0] == "--s3-endpoint":
        storage = s3_storage(store_args[1], store_args[3])
    else:
        storage = FilesystemStorage(Path(store_args[1]))
    await storage.start()
    built = await build_apps(database_url, unique, storage, tmp_path / "spool")
    yield built
    await built.close()
    await storage.close()


@pytest.fixture
def spawn(
    apps: Apps, database_url: str, store_args: list[str], tmp_path: Path, unique: str
) -> Iterator[object]:
    workers = AppsWorkers(tmp_path, database_url, apps.saga_name, apps.spool.directory)

    async def start(**faults: Option) -> WorkerProcess:
        return await workers.start(f"apps-chaos-{unique}", *store_args, **faults)

    yield start
    workers.close()


async def assert_consistent(apps: Apps, app_id: str, data: bytes | None) -> None:
    """Record and object agree (or neither exists), nothing spooled, reconcile clean."""
    app = await apps.record(app_id)
    assert app is not None
    stored = await apps.storage.stat(app.object_key)
    if data is None:
        assert app.status is AppStatus.FAILED
        assert stored is None
    else:
        assert (app.status, app.published_at) == (AppStatus.AVAILABLE, None)  # private
        assert (app.size, app.sha256) == (len(data), sha256(data))
        assert stored is not None
        assert stored.size == len(data)
    assert apps.spooled() == []
    assert await apps.pending() == []
    report = await apps.reconciler.run(package_name=app.package_name)
    assert report.clean, report


@pytest.mark.parametrize(
    ("store_args", "step"),
    [("filesystem", step) for step in STEPS] + [("s3", "UPLOAD_TO_STORAGE")],
    indirect=["store_args"],
)
async def test_killed_after_a_step_acted_the_upload_still_completes(
    apps: Apps, spawn: object, unique: str, step: str, store_args: list[str]
) -> None:
    data = apk(package_for(unique), 1)
    accepted = await apps.upload(Principal(f"u-{unique}"), data)
    doomed = await spawn(crash_after=[step])  # type: ignore[operator]
    assert await doomed.exited() == -9
    await spawn()  # type: ignore[operator]
    run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPLETED, run.error
    await assert_consistent(apps, accepted.application.id, data)


@pytest.mark.parametrize("store_args", ["s3"], indirect=True)  # multipart is an S3 matter
async def test_killed_in_the_middle_of_a_multipart_upload_leaves_no_leftovers(
    apps: Apps, spawn: object, unique: str, store_args: list[str]
) -> None:
    data = apk(package_for(unique), 1, big_asset_size=2 * PART_SIZE + 1024)
    accepted = await apps.upload(Principal(f"u-{unique}"), data)
    doomed = await spawn(kill_after_part=1)  # type: ignore[operator]
    assert await doomed.exited() == -9
    assert len(await apps.pending()) == 1  # part 1 stored, parts 2 and 3 never sent
    await spawn()  # type: ignore[operator]
    run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPLETED, run.error
    await assert_consistent(apps, accepted.application.id, data)


@pytest.mark.parametrize(
    ("store_args", "undo"),
    [
        ("filesystem", "UPLOAD_TO_STORAGE"),
        ("filesystem", "CREATE_APP_RECORD"),
        ("s3", "UPLOAD_TO_STORAGE"),
    ],
    indirect=["store_args"],
)
async def test_killed_while_compensating_the_undo_finishes(
    apps: Apps, spawn: object, unique: str, undo: str, store_args: list[str]
) -> None:
    """MARK_AVAILABLE fails for good after the object was stored; the worker dies undoing."""
    accepted = await apps.upload(Principal(f"u-{unique}"), apk(package_for(unique), 1))
    doomed = await spawn(fail=["MARK_AVAILABLE"], crash_before_undo=[undo])  # type: ignore[operator]
    assert await doomed.exited() == -9
    assert (await apps.engine.get(accepted.saga_id)).status is SagaStatus.COMPENSATING
    await spawn()  # type: ignore[operator]
    run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPENSATED
    await assert_consistent(apps, accepted.application.id, None)
