"""The install sagas on the docker runtime: adb-shell to a container's adbd (the agent image).

The same sagas and services as the platform's, wired here on a docker runtime (its bind
mounts are a test's: the image runs this source tree), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.adapters import AppsApkSource
from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import create_apps_schema
from cloudphone.apps.service import AppsService
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.apps.upload import build_upload_saga
from cloudphone.devices.runtimes.docker import DockerRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.installs import (
    ApkSpool,
    InstallService,
    InstallStatus,
    build_install_saga,
    build_uninstall_saga,
)
from cloudphone.installs.models import create_installs_schema
from cloudphone.saga import SagaEngine, SagaStatus
from tests.support.apps_harness import apk, chunks_of
from tests.support.devices_agent_image import agent_binds, build_agent_image
from tests.support.devices_docker import PrivateDockerd, dockerd
from tests.support.devices_stack import (
    FAST_RETRY,
    SMALL,
    build_sagas,
    create_devices_schema,
    make_config,
    remove_all,
)

__all__ = ["dockerd"]  # a fixture used below
WAIT = timedelta(seconds=60)


@pytest.fixture(scope="session")
def agent_image(dockerd: PrivateDockerd) -> str:
    """The image running the project's device agent (imported once per session)."""
    return build_agent_image(dockerd.url)


@pytest.fixture
async def runtime(
    dockerd: PrivateDockerd, agent_image: str, unique: str
) -> AsyncIterator[DockerRuntime]:
    """A docker runtime that speaks ADB to its containers, as to Redroid."""
    options = dockerd.options(
        f"inst-{unique}", image=agent_image, protocol="adb", binds=agent_binds()
    )
    docker = DockerRuntime(options)
    yield docker
    await remove_all(docker)
    await docker.close()


async def test_install_upgrade_and_uninstall_on_a_container(
    make_engine: Callable[..., SagaEngine], runtime: DockerRuntime, tmp_path: Path, unique: str
) -> None:
    """device_create, app_upload, app_install twice (upgrade), app_uninstall: over its adbd."""
    config = make_config()
    storage = FilesystemStorage(tmp_path / "objects")
    uploads = UploadSpool(tmp_path / "uploads")
    source = AppsApkSource()
    sagas = [
        *build_sagas(runtime, config),
        build_upload_saga(storage, uploads, retry=FAST_RETRY),
        build_install_saga(
            runtime,
            source,
            ApkSpool(tmp_path / "installs"),
            retry=FAST_RETRY,
            max_apk_bytes=1 << 20,
        ),
        build_uninstall_saga(runtime, retry=FAST_RETRY),
    ]
    engine = make_engine(sagas)
    await engine.create_schema()
    for create in (create_devices_schema, create_apps_schema, create_installs_schema):
        await create(engine.db)
    await storage.start()
    devices = DeviceService(engine, config, runtime)
    source.apps = AppsService(engine.db, engine, storage, uploads, AppsConfig())
    installs = InstallService(engine, source)
    ann, package = Principal(f"ann-{unique}"), f"com.t{unique}.notes"

    async with engine.worker(concurrency=4):
        created = await devices.create_device(ann, "phone", SMALL)
        assert (await engine.wait(created.saga_id, timeout=WAIT)).status is SagaStatus.COMPLETED
        apps = []
        for version in (2, 3):
            upload = await source.apps.upload_app(ann, chunks_of(apk(package, version)))
            assert (await engine.wait(upload.saga_id, timeout=WAIT)).status is SagaStatus.COMPLETED
            apps.append(upload.application.id)
        for app_id in apps:
            accepted = await installs.install_app(ann, created.device.id, app_id)
            run = await engine.wait(accepted.saga_id, timeout=WAIT)
            assert run.status is SagaStatus.COMPLETED, run.error
        [row] = await installs.list_installations(ann, created.device.id)
        assert (row.status, row.version_code) == (InstallStatus.INSTALLED, 3)
        container = await runtime.inspect(f"cloudphone-{created.saga_id}")
        assert container is not None
        async with runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {package: 3}

        removal = await installs.uninstall_app(ann, created.device.id, package)
        assert (await engine.wait(removal.saga_id, timeout=WAIT)).status is SagaStatus.COMPLETED
        async with runtime.adb_session(container) as phone:
            assert await phone.list_packages(package) == {}
        assert await installs.list_installations(ann, created.device.id) == []
