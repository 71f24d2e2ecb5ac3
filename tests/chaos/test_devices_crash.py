"""Device workers SIGKILLed: mid-creation, and after the creation.

Mid-creation: after recovery, RUNNING or fully undone, no orphans. After the creation: the
device watch of another worker restarts the device.

PostgreSQL, local runtime: the worker children spawn real agent processes; the test reads the
same runtime state directory to see every container ("the local runtime's table").
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudphone.devices.links import LineLink
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.devices.spec import Resources
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaEngine, SagaStatus
from tests.support.devices_cluster import device_cluster
from tests.support.devices_stack import (
    ADMIN,
    SMALL,
    DeviceStack,
    build_sagas,
    create_devices_schema,
    local_runtime,
    make_config,
    remove_all,
)
from tests.support.devices_worker import DeviceWorkers
from tests.support.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


@pytest.fixture
async def runtime(tmp_path: Path, unique: str) -> AsyncIterator[LocalRuntime]:
    """The local runtime the workers and the test share (same state dir and instance)."""
    rt = local_runtime(tmp_path / "local-runtime", f"chaos-{unique}")
    yield rt
    await remove_all(rt)
    assert rt.scan() == []


@pytest.fixture
async def stack(
    postgres_url: str, runtime: LocalRuntime, unique: str
) -> AsyncIterator[DeviceStack]:
    """The test's own engine: starts creations and reads; it runs no worker."""
    config = make_config()
    engine = SagaEngine(postgres_url, build_sagas(runtime, config), worker_id=f"api-{unique}")
    await engine.create_schema()
    await create_devices_schema(engine.db)
    yield DeviceStack(engine, DeviceService(engine, config, runtime), runtime, config)
    await engine.close()


@pytest.fixture
def workers(
    postgres_url: str, stack: DeviceStack, runtime: LocalRuntime, tmp_path: Path
) -> Iterator[DeviceWorkers]:
    """Worker children on the local runtime; all SIGKILLed at the end."""
    pool = DeviceWorkers(
        postgres_url,
        stack.config.model_dump(mode="json"),
        tmp_path,
        runtime="local",
        state_dir=str(runtime.state_dir),
        instance=runtime.instance,
    )
    yield pool
    pool.close()


async def assert_no_orphans(stack: DeviceStack) -> None:
    """Every container belongs to a live device."""
    live = {d.container_name for d in await stack.service.list_devices(ADMIN)}
    for container in await stack.containers():
        assert container.name in live, f"orphan container {container.name}"


async def assert_running(stack: DeviceStack, user: Principal, device_id: str) -> None:
    device = await stack.device(device_id)
    assert device.status is DeviceStatus.RUNNING
    assert device.adb_port is not None
    assert (await LineLink(device.adb_host or "", device.adb_port).probe("x")).serial == device_id
    assert [c.name for c in await stack.containers()] == [device.container_name]
    assert len(await stack.ports_of_user(user.user_id)) == 2
    quota = await stack.quota(user.user_id)
    assert (quota.used.devices, quota.reserved) == (1, Resources())


async def assert_undone(stack: DeviceStack, user: Principal, saga_id: str) -> None:
    assert await stack.containers() == []
    assert await stack.ports_of_saga(saga_id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    [device] = await stack.devices_of(user.user_id)
    assert device.status is DeviceStatus.ERROR


@pytest.mark.parametrize("step", ["CREATE_CONTAINER", "INITIALIZE_DEVICE"])
@pytest.mark.parametrize("outcome", ["finishes", "is_undone"])
async def test_worker_killed_after_the_runtime_acted(
    stack: DeviceStack, workers: DeviceWorkers, unique: str, step: str, outcome: str
) -> None:
    """Killed after the step's runtime call, before its commit: adopted or fully undone.

    The next worker adopts the same container and finishes, or (its boot failing) removes it
    and releases everything.
    """
    user = Principal(f"user-{unique}")
    first = await workers.start(f"a-{unique}", crash_after=[step])
    created = await stack.service.create_device(user, "phone", SMALL)
    assert await first.exited() == -signal.SIGKILL
    [orphan] = await stack.containers()  # made by the dead worker, not recorded yet
    # Its device process ended with the worker that started it (no leak if none recovers).
    await eventually(
        stack.containers, lambda found: not found[0].running, what="agent ended with its worker"
    )

    recovery = {"fail": ["INITIALIZE_DEVICE"]} if outcome == "is_undone" else {}
    await workers.start(f"b-{unique}", **recovery)
    run = await stack.wait(created.saga_id, seconds=45)

    history = await stack.engine.history(created.saga_id)
    assert any(e.kind is EventKind.LEASE_TAKEOVER for e in history), workers.logs()
    if outcome == "finishes":
        assert run.status is SagaStatus.COMPLETED, (run.error, workers.logs())
        await assert_running(stack, user, created.device.id)
        [container] = await stack.containers()
        assert container.id == orphan.id  # adopted, not made twice
    else:
        assert run.status is SagaStatus.COMPENSATED, (run.error, workers.logs())
        await assert_undone(stack, user, created.saga_id)
    await assert_no_orphans(stack)


async def test_worker_killed_while_waiting_for_the_device(
    stack: DeviceStack, workers: DeviceWorkers, unique: str
) -> None:
    """SIGKILL from outside during INITIALIZE_DEVICE: taken over and finished, one container."""
    user = Principal(f"user-{unique}")
    first = await workers.start(f"a-{unique}", hang=["INITIALIZE_DEVICE"])
    created = await stack.service.create_device(user, "phone", SMALL)

    async def step() -> str | None:
        return (await stack.engine.get(created.saga_id)).current_step

    await eventually(step, lambda s: s == "INITIALIZE_DEVICE", timeout=20, what="booting")
    first.kill()
    await workers.start(f"b-{unique}")
    run = await stack.wait(created.saga_id, seconds=45)

    assert run.status is SagaStatus.COMPLETED, (run.error, workers.logs())
    await assert_running(stack, user, created.device.id)
    await assert_no_orphans(stack)


def parent_of(pid: int) -> int:
    """The parent pid of a process (``/proc/<pid>/stat``, after the command name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def agent_parents(runtime: LocalRuntime, device: dict[str, Any]) -> list[int]:
    """Parent pids of the device's live agent processes (one when all is well)."""
    return [parent_of(p.pid) for p in runtime.scan() if p.token == device["container_id"]]


async def test_devices_of_a_killed_worker_are_restarted_by_another(tmp_path: Path) -> None:
    """SIGKILL the worker that launched a device: another worker restarts it within seconds.

    Its process dies with the worker; the survivor's watch starts it again: RUNNING, its ADB
    port answering again, the survivor its parent.
    """
    runtime = LocalRuntime(tmp_path / "var" / "devices")
    with device_cluster(tmp_path) as cluster:
        workers = [cluster.add_worker("w1"), cluster.add_worker("w2")]
        async with cluster.client() as http:
            device = await cluster.create_device(http)
            [launcher] = [w for w in workers if [w.pid] == agent_parents(runtime, device)]
            [survivor] = [w for w in workers if w is not launcher]

            assert launcher.kill() == -signal.SIGKILL
            back = await cluster.comes_back(
                http,
                device,
                lambda: agent_parents(runtime, device),
                lambda parents: parents == [survivor.pid],
                what="device restarted by the surviving worker",
            )
        assert back["adb_port"] == device["adb_port"]
    assert runtime.scan() == []  # the survivor stopped what it started
