"""Object stores belong to one deployment: a second one refuses the same root or S3 prefix.

Without it, the second deployment's reconcile takes the first one's objects for orphans
(no record in its database) and ``--fix`` deletes them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.apps.storage.s3 import S3Storage
from cloudphone.apps.storage.s3_marker import MARKER_NAME
from cloudphone.deployment import STAMP_FILE, Deployment, DeploymentMismatchError
from tests.support.apps_s3 import TEST_BUCKET, WeedServer, s3_storage

KEY = "apps/com.example/1/app.apk"


def deployment(name: str) -> Deployment:
    """A deployment with a fresh id on database ``name``."""
    return Deployment(str(uuid.uuid4()), f"sqlite+aiosqlite:///{name}.db")


@pytest.fixture
def apk(tmp_path: Path) -> Path:
    path = tmp_path / "app.apk"
    path.write_bytes(b"x" * 1000)
    return path


@pytest.fixture
async def stores(weed: WeedServer, unique: str) -> AsyncIterator[list[S3Storage]]:
    """Two S3 stores on the same bucket and prefix (closed at the end)."""
    made = [s3_storage(weed.endpoint, f"claim{unique}/") for _ in range(2)]
    yield made
    for store in made:
        await store.close()


async def test_a_second_deployment_refuses_an_s3_prefix_in_use(
    stores: list[S3Storage], apk: Path
) -> None:
    """Same bucket and prefix: the second claim fails naming both; the objects stay."""
    first, second = stores
    owner, other = deployment("a"), deployment("b")
    await first.claim(owner)
    await first.put_file(KEY, apk, size=1000)
    with pytest.raises(DeploymentMismatchError) as refused:
        await second.claim(other)
    message = str(refused.value)
    assert f"object store s3://{TEST_BUCKET}/{first.prefix}" in message
    assert owner.id in message
    assert other.id in message
    assert await first.stat(KEY) is not None
    assert [o.key async for o in first.list_objects("apps/")] == [KEY]
    await first.claim(owner)  # its own marker: claiming again (a restart) is fine


async def test_deployments_on_their_own_prefixes_never_see_each_other(
    weed: WeedServer, unique: str, apk: Path
) -> None:
    """One bucket, two prefixes: each lists only its objects (the marker never shows)."""
    first = s3_storage(weed.endpoint, f"one{unique}/")
    second = s3_storage(weed.endpoint, f"two{unique}/")
    try:
        await first.claim(deployment("a"))
        await second.claim(deployment("b"))
        await first.put_file(KEY, apk, size=1000)
        assert [o.key async for o in first.list_objects("")] == [KEY]
        assert [o.key async for o in second.list_objects("")] == []
    finally:
        await first.close()
        await second.close()


async def test_a_claim_made_while_s3_was_down_is_checked_before_listing(
    tmp_path: Path, unique: str
) -> None:
    """S3 down at start: the store starts, but listing (reconcile) refuses a foreign prefix."""
    server = WeedServer(tmp_path / "weed")
    server.start()
    prefix = f"late{unique}/"
    owner = s3_storage(server.endpoint, prefix)
    late = s3_storage(server.endpoint, prefix)
    try:
        await owner.claim(deployment("a"))
        server.stop(kill=True)
        await late.claim(deployment("b"))  # logs that it will check later
        server.start()
        with pytest.raises(DeploymentMismatchError):
            _ = [o async for o in late.list_objects("apps/")]
        with pytest.raises(DeploymentMismatchError):
            _ = [u async for u in late.list_pending_uploads("apps/")]
    finally:
        await owner.close()
        await late.close()
        server.stop(kill=True)


async def test_the_filesystem_root_is_stamped_and_refused_to_others(
    tmp_path: Path, apk: Path
) -> None:
    """The stamp file names the owner, stays out of listings, and refuses a second one."""
    root = tmp_path / "objects"
    owner = deployment("a")
    first = FilesystemStorage(root)
    await first.claim(owner)
    await first.put_file(KEY, apk, size=1000)
    stamp = json.loads((root / STAMP_FILE).read_text())
    assert stamp == owner.as_stamp()
    assert [o.key async for o in first.list_objects("")] == [KEY]
    assert [u async for u in first.list_pending_uploads("")] == []
    with pytest.raises(DeploymentMismatchError, match=f"object store {root}"):
        await FilesystemStorage(root).claim(deployment("b"))
    assert await first.stat(KEY) is not None


async def test_an_s3_marker_is_outside_the_apps_keys(stores: list[S3Storage]) -> None:
    """The marker sits under the store's prefix, beside ``apps/``."""
    first, _ = stores
    owner = deployment("a")
    await first.claim(owner)
    answer = await first.client.get_object(Bucket=TEST_BUCKET, Key=first.prefix + MARKER_NAME)
    async with answer["Body"] as body:
        assert json.loads(await body.read()) == owner.as_stamp()
