"""Deployments sharing one Docker engine never sweep each other's device containers.

Both platforms label their containers with the same runtime instance (the default,
``cloudphone``); the deployment label is what keeps a sweep to its own containers. Without
it, the second deployment found the first one's containers with no device row in its
database and removed them as orphans.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from cloudphone.deployment import LABEL_DEPLOYMENT, Deployment
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.runtimes.docker import DockerRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.saga import SagaEngine, SagaStatus
from tests.support.devices_docker import PrivateDockerd, dockerd
from tests.support.devices_stack import (
    SMALL,
    build_sagas,
    create_devices_schema,
    remove_all,
)

__all__ = ["dockerd"]  # fixture used below


def deployment() -> Deployment:
    """A deployment with a fresh id."""
    return Deployment(str(uuid.uuid4()), "test")


async def service_on(
    engine: SagaEngine, runtime: DockerRuntime, config: DevicesConfig
) -> DeviceService:
    """The devices service on ``engine``'s database, its schema created."""
    await engine.create_schema()
    await create_devices_schema(engine.db)
    return DeviceService(engine, config, runtime)


async def test_a_sweep_leaves_another_deployments_containers_alone(
    make_engine: Callable[..., SagaEngine],
    dockerd: PrivateDockerd,
    devices_config: DevicesConfig,
    user: Principal,
    unique: str,
    tmp_path: Path,
) -> None:
    """B's sweep on B's empty database removes nothing of A's; A still sees its device."""
    instance = f"shared-{unique}"
    mine, theirs = (
        DockerRuntime(dockerd.options(instance)),
        DockerRuntime(dockerd.options(instance)),
    )
    owner, other = deployment(), deployment()
    await mine.claim(owner)
    await theirs.claim(other)
    engine = make_engine(build_sagas(mine, devices_config))
    service = await service_on(engine, mine, devices_config)
    other_engine = SagaEngine(
        f"sqlite+aiosqlite:///{tmp_path / 'other.db'}", build_sagas(theirs, devices_config)
    )
    try:
        async with engine.worker(concurrency=4):
            created = await service.create_device(user, "phone", SMALL)
            assert (
                await engine.wait(created.saga_id, timedelta(seconds=45))
            ).status is SagaStatus.COMPLETED
        name = (await service.get_device(user, created.device.id)).container_name
        assert name is not None

        other_service = await service_on(other_engine, theirs, devices_config)
        report = await other_service.sweep()

        assert report.removed == []
        assert await theirs.list() == []
        container = await mine.inspect(name)
        assert container is not None
        assert container.running
        assert container.labels[LABEL_DEPLOYMENT] == owner.id
        assert [c.name for c in await mine.list()] == [name]
        assert (await service.sweep()).removed == []
    finally:
        await other_engine.close()
        await remove_all(mine)
        await mine.close()
        await theirs.close()
