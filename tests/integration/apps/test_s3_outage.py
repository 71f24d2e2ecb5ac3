"""The S3 server stops in the middle of UPLOAD_TO_STORAGE (a real SeaweedFS, killed by pid).

Back before the next attempt: the upload is retried and completes, without multipart
leftovers. Down for good: the saga compensates; once the server is back, nothing is left —
no AVAILABLE record, no object, no unfinished multipart upload, no spooled file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.apps.models import AppStatus
from cloudphone.apps.storage.s3 import S3Storage
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaStatus, StepContext
from tests.support.apps_harness import Apps, apk, build_apps, sha256
from tests.support.apps_s3 import PART_SIZE, WeedServer, s3_storage
from tests.support.waiting import eventually


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WeedServer]:
    """A SeaweedFS of this test's own, to stop and restart."""
    weed = WeedServer(tmp_path / "weed")
    weed.start()
    yield weed
    weed.stop(kill=True)


@dataclass
class Outage:
    """Kills the server after the first stored part; can bring it back before an attempt."""

    server: WeedServer
    restart_before_attempt: int | None = None
    parts_seen: list[tuple[int, int]] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)

    async def on_part(self, key: str, number: int, total: int) -> None:
        self.parts_seen.append((number, total))
        if len(self.parts_seen) == 1:  # mid-upload: part 1 of 3 is stored, 2 and 3 are not
            await asyncio.to_thread(self.server.stop, kill=True)

    async def before_attempt(self, ctx: StepContext) -> None:
        if ctx.step == "UPLOAD_TO_STORAGE" and not ctx.compensating:
            self.attempts.append(ctx.attempt)
            if ctx.attempt == self.restart_before_attempt:
                await asyncio.to_thread(self.server.start)

    async def after_action(self, ctx: StepContext, output: Mapping[str, Any] | None) -> None:
        """Nothing after the action."""


@pytest.fixture
async def outage_apps(
    server: WeedServer, database_url: str, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[Apps, Outage]]:
    outage = Outage(server)
    store = s3_storage(server.endpoint, "", on_part=outage.on_part, part_concurrency=1)
    await store.start()
    apps = await build_apps(database_url, unique, store, tmp_path / "spool", hooks=outage)
    try:
        yield apps, outage
    finally:
        await apps.close()
        await store.close()


def big_apk(package: str) -> bytes:
    """An APK of three 5 MiB parts."""
    data = apk(package, 1, big_asset_size=2 * PART_SIZE + 1024)
    assert 2 * PART_SIZE < len(data) <= 3 * PART_SIZE
    return data


async def unfinished_uploads(store: S3Storage) -> list[str]:
    listed = await store.client.list_multipart_uploads(Bucket=store.bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


async def test_a_server_back_before_the_next_attempt_gets_the_upload_retried(
    outage_apps: tuple[Apps, Outage], user: Principal, package: str
) -> None:
    apps, outage = outage_apps
    outage.restart_before_attempt = 2
    data = big_apk(package)
    async with apps.engine.worker():
        run, app = await apps.upload_and_wait(user, data)
    assert run.status is SagaStatus.COMPLETED, run.error
    # Attempt 2 meets the server back; on a loaded machine a freshly restarted weed can still
    # time out its first read, and one more attempt then finishes the upload.
    assert outage.attempts[:2] == [1, 2]
    assert len(outage.attempts) <= 3
    assert outage.parts_seen[0] == (1, 3)
    assert app is not None
    assert (app.status, app.size, app.sha256) == (AppStatus.AVAILABLE, len(data), sha256(data))
    stored = await apps.storage.stat(app.object_key)
    assert stored is not None
    assert stored.size == len(data)
    assert isinstance(apps.storage, S3Storage)
    assert await unfinished_uploads(apps.storage) == []  # attempt 1's upload was aborted
    assert (await apps.reconciler.run(package_name=package)).clean
    assert apps.spooled() == []


async def test_a_server_down_for_good_gets_the_upload_compensated(
    outage_apps: tuple[Apps, Outage], user: Principal, package: str
) -> None:
    apps, outage = outage_apps
    accepted = await apps.upload(user, big_apk(package))
    async with apps.engine.worker():

        async def undo_failures() -> int:
            history = await apps.engine.history(accepted.saga_id)
            return sum(1 for e in history if e.kind is EventKind.COMPENSATION_FAILED)

        # Every attempt failed; the compensation cannot reach the server either and retries.
        await eventually(undo_failures, lambda n: n >= 2, timeout=30, what="undo retried")
        assert (await apps.engine.get(accepted.saga_id)).status is SagaStatus.COMPENSATING
        assert outage.attempts == [1, 2, 3, 4]
        record = await apps.record(accepted.application.id)
        assert record is not None
        assert record.status is AppStatus.UPLOADING  # never AVAILABLE
        assert isinstance(apps.storage, S3Storage)
        await asyncio.to_thread(outage.server.start)  # back, to see what is left
        run = await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
    assert run.status is SagaStatus.COMPENSATED
    record = await apps.record(accepted.application.id)
    assert record is not None
    assert record.status is AppStatus.FAILED
    assert record.failure_reason is not None
    assert "UPLOAD_TO_STORAGE" in record.failure_reason
    assert await apps.objects() == []
    assert await unfinished_uploads(apps.storage) == []
    assert apps.spooled() == []
    assert (await apps.reconciler.run(package_name=package)).clean


async def test_a_store_started_while_s3_is_down_works_once_it_is_back(
    server: WeedServer, tmp_path: Path, unique: str
) -> None:
    await asyncio.to_thread(server.stop, kill=True)
    store = s3_storage(server.endpoint, f"late{unique}/")
    await store.start()  # logs a warning instead of failing the platform's start
    try:
        await asyncio.to_thread(server.start)
        source = tmp_path / "x.bin"
        source.write_bytes(b"late")
        await store.put_file("apps/a.b/1/x.apk", source, size=4)
        stored = await store.stat("apps/a.b/1/x.apk")
        assert stored is not None
        assert stored.size == 4
    finally:
        await store.close()
