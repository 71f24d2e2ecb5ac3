"""A device's life on the local runtime: create, use, stop, start, delete, create again."""

from __future__ import annotations

import asyncio

import pytest

from cloudphone.devices.links import DISPLAY_PROP, LineLink
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.spec import Resources
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import SagaStatus
from tests.support.devices_stack import SMALL, DeviceStack, proc_limits


async def test_created_device_runs_and_answers_as_itself(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """POST → CREATING at once; the saga ends RUNNING with a live agent bound to its ports."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone-1", SMALL)
        assert created.device.status is DeviceStatus.CREATING
        assert (await stack.quota(user.user_id)).reserved == Resources.of(SMALL)
        run = await stack.wait(created.saga_id)

    assert run.status is SagaStatus.COMPLETED, run.error
    device = await stack.device(created.device.id)
    assert device.status is DeviceStatus.RUNNING
    assert device.runtime == "local"
    assert device.container_name == f"cloudphone-{created.saga_id}"
    assert device.adb_port is not None
    assert device.stream_port is not None
    assert sorted([device.adb_port, device.stream_port]) == await stack.ports_of_user(user.user_id)
    link = LineLink(device.adb_host or "", device.adb_port)
    banner = await link.probe("n0nce")
    assert banner.serial == device.id
    assert await link.get_prop(DISPLAY_PROP) == "720x1280@320"
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources.of(SMALL), Resources())
    assert [c.name for c in await stack.containers()] == [device.container_name]
    [agent] = runtime.scan()  # its memory limit is the agent's address-space limit
    assert f"Max address space         {SMALL.memory_mb * 1024 * 1024}" in proc_limits(agent.pid)


async def test_delete_frees_everything_and_twice_is_harmless(
    stack: DeviceStack, user: Principal
) -> None:
    """DELETE → DELETED: no container, no ports, usage back to zero; a second DELETE is a no-op."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone-1", SMALL)
        await stack.wait(created.saga_id)
        first, second = await asyncio.gather(
            stack.service.delete_device(user, created.device.id),
            stack.service.delete_device(user, created.device.id),
        )
        assert first.saga_id == second.saga_id
        run = await stack.wait(first.saga_id)
        third = await stack.service.delete_device(user, created.device.id)

    assert run.status is SagaStatus.COMPLETED, run.error
    assert third.saga_id == first.saga_id
    device = await stack.device(created.device.id)
    assert device.status is DeviceStatus.DELETED
    assert device.deleted_at is not None
    assert await stack.containers() == []
    assert await stack.ports_of_user(user.user_id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    assert await stack.reservations(user.user_id) == {"RETURNED": 1}
    assert await stack.service.list_devices(user) == []


async def test_delete_then_create_again_gets_the_same_quota_and_name(
    stack: DeviceStack, user: Principal
) -> None:
    """With room for one device: create, delete, create again with the same name succeeds."""
    limits = (await stack.quota(user.user_id)).limits
    await stack.set_limits(user.user_id, type(limits)(**{**limits.__dict__, "max_devices": 1}))
    async with stack.engine.worker(concurrency=8):
        for round_ in range(3):
            created = await stack.service.create_device(user, "the-phone", SMALL)
            assert (await stack.wait(created.saga_id)).status is SagaStatus.COMPLETED
            assert (await stack.quota(user.user_id)).used.devices == 1, round_
            deletion = await stack.service.delete_device(user, created.device.id)
            assert (await stack.wait(deletion.saga_id)).status is SagaStatus.COMPLETED

    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    assert [d.status for d in await stack.devices_of(user.user_id)] == [DeviceStatus.DELETED] * 3


async def test_stop_and_start(stack: DeviceStack, user: Principal) -> None:
    """Stop kills the agent (device STOPPED, quota kept); start brings it back answering."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone-1", SMALL)
        await stack.wait(created.saga_id)

    stopped = await stack.service.stop_device(user, created.device.id)
    assert stopped.status is DeviceStatus.STOPPED
    assert [c.running for c in await stack.containers()] == [False]
    assert (await stack.quota(user.user_id)).used.devices == 1
    assert (await stack.service.stop_device(user, created.device.id)).status is (
        DeviceStatus.STOPPED
    )

    started = await stack.service.start_device(user, created.device.id)
    assert started.status is DeviceStatus.RUNNING
    assert started.adb_port is not None
    banner = await LineLink(started.adb_host or "", started.adb_port).probe("again")
    assert banner.serial == started.id


async def test_idempotency_key_replays_the_first_creation(
    stack: DeviceStack, user: Principal
) -> None:
    """The same Idempotency-Key returns the first device and saga; a different body is refused."""
    first = await stack.service.create_device(user, "phone-1", SMALL, idempotency_key="k-1")
    again = await stack.service.create_device(user, "phone-1", SMALL, idempotency_key="k-1")
    assert (again.saga_id, again.device.id, again.replayed) == (
        first.saga_id,
        first.device.id,
        True,
    )
    with pytest.raises(ConflictError) as refused:
        await stack.service.create_device(user, "phone-2", SMALL, idempotency_key="k-1")
    assert refused.value.code == "idempotency_key_reused"
    assert len(await stack.runs_of(user.user_id)) == 1
    async with stack.engine.worker(concurrency=8):
        assert (await stack.wait(first.saga_id)).status is SagaStatus.COMPLETED


async def test_devices_end_with_their_platform_and_come_back_on_restart(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """Closing the runtime stops its agents; the start-up sweep restarts RUNNING devices."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        await stack.wait(created.saga_id)
    await runtime.close()  # the platform goes away
    assert runtime.scan() == []
    assert [c.running for c in await stack.containers()] == [False]

    report = await stack.service.sweep()  # what a restarted worker process runs first

    assert report.restarted == [created.device.id]
    device = await stack.device(created.device.id)
    assert device.status is DeviceStatus.RUNNING
    assert device.adb_port is not None
    link = LineLink(device.adb_host or "", device.adb_port)
    assert (await link.probe("back")).serial == device.id
    assert await link.get_prop(DISPLAY_PROP) == "720x1280@320"  # re-initialised


async def test_a_stopped_device_is_not_restarted_by_the_sweeper(
    stack: DeviceStack, user: Principal
) -> None:
    """STOPPED is the wanted state: the sweeper leaves its container stopped."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        await stack.wait(created.saga_id)
    await stack.service.stop_device(user, created.device.id)
    report = await stack.service.sweep()
    assert report.restarted == []
    assert [c.running for c in await stack.containers()] == [False]
