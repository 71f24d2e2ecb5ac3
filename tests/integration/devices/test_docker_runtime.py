"""The docker runtime against a private dockerd, with the busybox fake-device image."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiodocker
import pytest

from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.links import DISPLAY_PROP, LineLink
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.base import Launch, PermanentRuntimeError
from cloudphone.devices.runtimes.docker import DockerRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.devices.spec import Resources
from cloudphone.domain import Principal, QuotaExceededError
from cloudphone.saga import SagaEngine, SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.support.devices_docker import PrivateDockerd, docker_runtime, dockerd
from tests.support.devices_stack import (
    SMALL,
    DeviceStack,
    build_sagas,
    create_devices_schema,
    limits,
    wait_all,
)

__all__ = ["docker_runtime", "dockerd"]  # fixtures used below

LAUNCH = Launch("cloudphone-runtime-test", "serial-1", 21501, 22501, SMALL, {"k": "v"})


async def host_config(daemon: PrivateDockerd, name: str) -> dict[str, Any]:
    """The container's HostConfig as the daemon reports it."""
    async with aiodocker.Docker(url=daemon.url) as client:
        data = await client.containers.container(name).show()
    config: dict[str, Any] = data["HostConfig"]
    return config


async def test_runtime_creates_with_limits_adopts_and_removes(
    docker_runtime: DockerRuntime, dockerd: PrivateDockerd
) -> None:
    """Create applies CPU/memory/pids limits; a second create adopts; remove is idempotent."""
    container = await docker_runtime.create(LAUNCH)
    assert container.running
    assert (container.adb_port, container.stream_port) == (21501, 22501)
    config = await host_config(dockerd, LAUNCH.name)
    assert config["NanoCpus"] == 500_000_000
    assert config["Memory"] == 256 * 1024 * 1024
    assert config["PidsLimit"] == 64
    assert config["Privileged"] is False
    again = await docker_runtime.create(LAUNCH)
    assert again.id == container.id
    assert [c.name for c in await docker_runtime.list()] == [LAUNCH.name]

    banner = await docker_runtime.initialize(container, "serial-1", SMALL, timeout=10)
    assert banner.serial == "serial-1"
    assert await LineLink("127.0.0.1", 21501).get_prop(DISPLAY_PROP) == "720x1280@320"

    assert await docker_runtime.stop(LAUNCH.name)
    stopped = await docker_runtime.inspect(LAUNCH.name)
    assert stopped is not None
    assert not stopped.running
    restarted = await docker_runtime.start(LAUNCH.name)
    assert restarted.running
    await docker_runtime.initialize(restarted, "serial-1", SMALL, timeout=10)

    assert await docker_runtime.remove(LAUNCH.name)
    assert not await docker_runtime.remove(LAUNCH.name)
    assert await docker_runtime.inspect(LAUNCH.name) is None
    assert await docker_runtime.list() == []


async def test_runtime_lists_only_its_own_instance(
    docker_runtime: DockerRuntime, dockerd: PrivateDockerd, unique: str
) -> None:
    """Containers of another platform instance on the same daemon are not listed."""
    other = DockerRuntime(dockerd.options(f"other-{unique}"))
    try:
        await other.create(replace(LAUNCH, name=f"cloudphone-other-{unique}"))
        assert await docker_runtime.list() == []
    finally:
        await other.remove(f"cloudphone-other-{unique}")
        await other.close()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [({"privileged": True}, "OCI runtime"), ({"image": "nope/nope:1"}, "No such image")],
)
async def test_refused_containers_are_permanent_errors(
    dockerd: PrivateDockerd, unique: str, overrides: dict[str, Any], reason: str
) -> None:
    """A refused privileged start or a missing image is permanent (no retry will help)."""
    runtime = DockerRuntime(dockerd.options(f"refused-{unique}", **overrides))
    try:
        with pytest.raises(PermanentRuntimeError, match=reason):
            await runtime.create(LAUNCH)
    finally:
        await runtime.remove(LAUNCH.name)
        await runtime.close()


@pytest.fixture
async def docker_stack(
    make_engine: Callable[..., SagaEngine],
    docker_runtime: DockerRuntime,
    devices_config: DevicesConfig,
    faults: FaultInjector,
) -> DeviceStack:
    """The devices service on the docker runtime (engine without a worker yet)."""
    engine = make_engine(build_sagas(docker_runtime, devices_config), hooks=faults)
    await engine.create_schema()
    await create_devices_schema(engine.db)
    service = DeviceService(engine, devices_config, docker_runtime)
    return DeviceStack(engine, service, docker_runtime, devices_config)


async def test_create_and_delete_a_device_in_docker(
    docker_stack: DeviceStack, user: Principal, dockerd: PrivateDockerd
) -> None:
    """device_create runs a container that answers as the device; device_delete removes it."""
    stack = docker_stack
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        assert (await stack.wait(created.saga_id)).status is SagaStatus.COMPLETED
        device = await stack.device(created.device.id)
        assert device.status is DeviceStatus.RUNNING
        assert device.runtime == "docker"
        assert device.adb_port is not None
        probe = await LineLink("127.0.0.1", device.adb_port).probe("n")
        assert probe.serial == device.id
        names = dockerd.cli("ps", "-a", "--format", "{{.Names}}").split()
        assert device.container_name in names

        deletion = await stack.service.delete_device(user, device.id)
        assert (await stack.wait(deletion.saga_id)).status is SagaStatus.COMPLETED

    assert device.container_name not in dockerd.cli("ps", "-a", "--format", "{{.Names}}")
    assert await stack.ports_of_user(user.user_id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())


async def test_boot_failure_in_docker_removes_the_container(
    docker_stack: DeviceStack, user: Principal, faults: FaultInjector
) -> None:
    """The container exists, the device never initialises: container gone, all released."""
    faults.fail("INITIALIZE_DEVICE", times=None, error=ConnectionError("no adb"))
    async with docker_stack.engine.worker(concurrency=8):
        created = await docker_stack.service.create_device(user, "phone", SMALL)
        run = await docker_stack.wait(created.saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert await docker_stack.containers() == []
    assert await docker_stack.ports_of_saga(created.saga_id) == []
    quota = await docker_stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())


async def test_privileged_refusal_compensates_without_retrying(
    make_engine: Callable[..., SagaEngine],
    dockerd: PrivateDockerd,
    devices_config: DevicesConfig,
    faults: FaultInjector,
    user: Principal,
    unique: str,
) -> None:
    """The daemon refuses privileged containers here: one attempt, compensated, no leftovers."""
    runtime = DockerRuntime(dockerd.options(f"priv-{unique}", privileged=True))
    engine = make_engine(build_sagas(runtime, devices_config), hooks=faults)
    await engine.create_schema()
    await create_devices_schema(engine.db)
    stack = DeviceStack(
        engine, DeviceService(engine, devices_config, runtime), runtime, devices_config
    )
    try:
        async with engine.worker(concurrency=4):
            created = await stack.service.create_device(user, "phone", SMALL)
            run = await stack.wait(created.saga_id)
        assert run.status is SagaStatus.COMPENSATED
        assert run.error is not None
        assert "OCI runtime" in run.error.message
        assert faults.attempts("CREATE_CONTAINER") == 1
        assert await runtime.list() == []
        assert (await stack.device(created.device.id)).status is DeviceStatus.ERROR
    finally:
        await runtime.close()


async def test_concurrent_creations_in_docker_respect_the_quota(
    docker_stack: DeviceStack, user: Principal
) -> None:
    """12 concurrent creations, quota 3: 3 containers RUNNING, 9 refused, nothing extra."""
    stack = docker_stack
    await stack.set_limits(user.user_id, limits(devices_=3))
    async with stack.engine.worker(concurrency=8):
        outcomes = await asyncio.gather(
            *(stack.service.create_device(user, f"p-{i}", SMALL) for i in range(12)),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        runs = await wait_all(stack, [a.saga_id for a in accepted])
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(accepted) == 3
    assert all(isinstance(r, QuotaExceededError) for r in refused)
    assert len(refused) == 9
    assert {r.status for r in runs} == {SagaStatus.COMPLETED}
    containers = await stack.containers()
    assert len(containers) == 3
    assert all(c.running for c in containers)
    assert len(await stack.ports_of_user(user.user_id)) == 6
