"""Docker devices under faults: a worker SIGKILLed mid-creation, a container ``docker kill``ed.

A worker SIGKILLed mid-creation: RUNNING or fully undone; `docker ps -a` clean. A RUNNING
device's container killed: a worker's device watch starts it again within seconds.

PostgreSQL, a private dockerd, the busybox fake-device image (tests/support/devices_docker.py).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.docker import DockerRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.devices.spec import Resources
from cloudphone.domain import Principal
from cloudphone.saga import SagaEngine, SagaStatus
from tests.support.devices_cluster import device_cluster
from tests.support.devices_docker import PrivateDockerd, docker_runtime, dockerd
from tests.support.devices_stack import (
    SMALL,
    DeviceStack,
    build_sagas,
    create_devices_schema,
    make_config,
    remove_all,
)
from tests.support.devices_worker import DeviceWorkers

__all__ = ["docker_runtime", "dockerd"]  # fixtures used below

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


@pytest.fixture
async def stack(
    postgres_url: str, docker_runtime: DockerRuntime, unique: str
) -> AsyncIterator[DeviceStack]:
    """The test's own engine (no worker) on the docker runtime."""
    config = make_config()
    engine = SagaEngine(
        postgres_url, build_sagas(docker_runtime, config), worker_id=f"api-{unique}"
    )
    await engine.create_schema()
    await create_devices_schema(engine.db)
    yield DeviceStack(engine, DeviceService(engine, config, docker_runtime), docker_runtime, config)
    await engine.close()


@pytest.fixture
def workers(
    postgres_url: str,
    stack: DeviceStack,
    dockerd: PrivateDockerd,
    docker_runtime: DockerRuntime,
    tmp_path: Path,
) -> Iterator[DeviceWorkers]:
    """Worker children on the same daemon and instance label; all SIGKILLed at the end."""
    pool = DeviceWorkers(
        postgres_url,
        stack.config.model_dump(mode="json"),
        tmp_path,
        runtime="docker",
        docker_url=dockerd.url,
        image=dockerd.image,
        instance=docker_runtime.options.instance,
    )
    yield pool
    pool.close()


@pytest.mark.parametrize("step", ["CREATE_CONTAINER", "INITIALIZE_DEVICE"])
@pytest.mark.parametrize("outcome", ["finishes", "is_undone"])
async def test_worker_killed_after_the_docker_call(
    stack: DeviceStack,
    workers: DeviceWorkers,
    dockerd: PrivateDockerd,
    docker_runtime: DockerRuntime,
    unique: str,
    outcome: str,
    step: str,
) -> None:
    """SIGKILL after the step's docker work, before its commit: container adopted or removed."""
    user = Principal(f"user-{unique}")
    first = await workers.start(f"a-{unique}", crash_after=[step])
    created = await stack.service.create_device(user, "phone", SMALL)
    assert await first.exited() == -signal.SIGKILL
    [orphan] = await stack.containers()

    recovery = {"fail": ["INITIALIZE_DEVICE"]} if outcome == "is_undone" else {}
    await workers.start(f"b-{unique}", **recovery)
    run = await stack.wait(created.saga_id, seconds=45)

    label = f"label=cloudphone.runtime={docker_runtime.options.instance}"
    listing = dockerd.cli("ps", "-a", "--filter", label, "--format", "{{.ID}} {{.Names}}")
    on_daemon = listing.splitlines()
    device = await stack.device(created.device.id)
    if outcome == "finishes":
        assert run.status is SagaStatus.COMPLETED, (run.error, workers.logs())
        assert device.status is DeviceStatus.RUNNING
        assert on_daemon == [f"{orphan.id[:12]} {device.container_name}"]
        assert (await stack.quota(user.user_id)).used.devices == 1
    else:
        assert run.status is SagaStatus.COMPENSATED, (run.error, workers.logs())
        assert device.status is DeviceStatus.ERROR
        assert on_daemon == []
        assert await stack.ports_of_saga(created.saga_id) == []
        quota = await stack.quota(user.user_id)
        assert (quota.used, quota.reserved) == (Resources(), Resources())


def docker_env(dockerd: PrivateDockerd) -> dict[str, str]:
    """Platform settings for the private daemon's fake-device image on the host network."""
    devices = {
        "RUNTIME": "docker",
        "DOCKER_HOST": dockerd.url,
        "DOCKER_IMAGE": dockerd.image,
        "DOCKER_PRIVILEGED": "false",
        "DOCKER_NETWORK_MODE": "host",
        "DOCKER_PROTOCOL": "line",
        "DOCKER_PIDS_LIMIT": "64",
    }
    return {f"CLOUDPHONE_DEVICES__{k}": v for k, v in devices.items()}


async def test_a_killed_container_is_started_again_by_the_watch(
    tmp_path: Path, dockerd: PrivateDockerd
) -> None:
    """`docker kill` a RUNNING device's container: within seconds it runs and answers again."""
    platform_containers = DockerRuntime(dockerd.options("cloudphone"))  # the platform's label
    try:
        with device_cluster(tmp_path, **docker_env(dockerd)) as cluster:
            cluster.add_worker("w1")
            async with cluster.client() as http:
                device = await cluster.create_device(http)
                cid = device["container_id"]
                first_start = started_at(dockerd, cid)

                dockerd.cli("kill", cid)
                back = await cluster.comes_back(
                    http,
                    device,
                    lambda: started_at(dockerd, cid),
                    lambda started: started not in (None, first_start),
                    what="container started again",
                )
            assert back["container_id"] == cid
    finally:
        await remove_all(platform_containers)
        await platform_containers.close()


def started_at(dockerd: PrivateDockerd, cid: str) -> str | None:
    """When the running container started (None while it does not run)."""
    state = dockerd.cli("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", cid).split()
    return state[1] if state[0] == "true" else None
