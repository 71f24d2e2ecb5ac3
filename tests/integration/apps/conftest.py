"""Apps fixtures: a store (filesystem, S3 on SeaweedFS), the service on the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudphone.apps.storage.base import ObjectStorage
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.domain import Principal
from tests.support.apps_harness import Apps, MakeApps, build_apps, package_for
from tests.support.apps_s3 import WeedServer, s3_storage


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """One SeaweedFS S3 server for the session (tests keep to their own key prefix)."""
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop(kill=True)  # its data is throwaway; a graceful stop can take 15 s


@pytest.fixture
def user(unique: str) -> Principal:
    return Principal(f"user-{unique}")


@pytest.fixture
def package(unique: str) -> str:
    return package_for(unique)


@pytest.fixture(params=["filesystem", "s3"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[ObjectStorage]:
    """Each apps test runs on every adapter: the filesystem, and S3 on SeaweedFS."""
    store: ObjectStorage
    if request.param == "s3":
        server: WeedServer = request.getfixturevalue("weed")
        store = s3_storage(server.endpoint, f"t{unique}/")
    else:
        store = FilesystemStorage(tmp_path / "objects")
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def make_apps(
    database_url: str, unique: str, storage: ObjectStorage, tmp_path: Path
) -> AsyncIterator[MakeApps]:
    """Build the service (options as in ``build_apps``); everything is closed at the end."""
    built: list[Apps] = []

    async def make(**options: Any) -> Apps:
        apps = await build_apps(
            database_url, f"{unique}{len(built) or ''}", storage, tmp_path / "spool", **options
        )
        built.append(apps)
        return apps

    yield make
    for apps in built:
        await apps.close()


@pytest.fixture
async def apps(make_apps: MakeApps) -> AsyncIterator[Apps]:
    """The service with a worker running."""
    built = await make_apps()
    async with built.engine.worker():
        yield built
