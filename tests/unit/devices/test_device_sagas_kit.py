"""The device sagas' compensation paths on the test kit: no engine database, a manual clock.

A creation that fails before or at ACTIVATE (its pivot), or outlives its deadline, leaves no
container, port or quota behind; crashes around the pivot count the device once. A deletion
only moves forward after MARK_DELETING: retried, taken over, resumed by an operator.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.spec import Resources
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, NonRetryableError, SagaRun, SagaStatus
from cloudphone.saga.testing import Boundary, MemoryEngine
from tests.support.devices_stack import SMALL, DeviceStack
from tests.unit.devices.conftest import MakeKit

CREATE_STEPS = (
    "RESERVE_QUOTA",
    "ALLOCATE_PORTS",
    "CREATE_CONTAINER",
    "CREATE_DEVICE_RECORD",
    "INITIALIZE_DEVICE",
    "ACTIVATE",
)
"""ACTIVATE is the pivot; every step before it has a compensation but INITIALIZE_DEVICE."""


def kit(stack: DeviceStack) -> MemoryEngine:
    assert isinstance(stack.engine, MemoryEngine)
    return stack.engine


async def create(stack: DeviceStack, user: Principal) -> tuple[str, str]:
    """Ask for a device; returns (saga id, device id)."""
    created = await stack.service.create_device(user, "phone", SMALL)
    return created.saga_id, created.device.id


async def assert_fully_undone(stack: DeviceStack, user: Principal, run: SagaRun) -> None:
    """No container, no port, no quota held; the device ERROR with the reason."""
    assert run.status in (SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT)
    assert await stack.containers() == []
    assert await stack.ports_of_saga(run.id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    assert await stack.reservations(user.user_id) == {"RELEASED": 1}
    [device] = await stack.devices_of(user.user_id)
    assert (device.status, device.adb_port) == (DeviceStatus.ERROR, None)
    assert run.id in (device.error or "")


async def assert_running_once(stack: DeviceStack, user: Principal, run: SagaRun) -> None:
    """One RUNNING device in one container, its quota used exactly once."""
    assert run.status is SagaStatus.COMPLETED, run.error
    [device] = await stack.devices_of(user.user_id)
    assert device.status is DeviceStatus.RUNNING
    assert [c.name for c in await stack.containers()] == [device.container_name]
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources.of(SMALL), Resources())
    assert await stack.reservations(user.user_id) == {"CONSUMED": 1}


async def test_a_device_is_created(stack: DeviceStack, user: Principal) -> None:
    async with kit(stack).worker():
        saga_id, _device_id = await create(stack, user)
        run = await stack.wait(saga_id)
    await assert_running_once(stack, user, run)


@pytest.mark.parametrize("step", CREATE_STEPS)
async def test_a_step_before_or_at_the_pivot_failing_for_good_undoes_the_creation(
    stack: DeviceStack, user: Principal, step: str
) -> None:
    engine = kit(stack)
    engine.faults.fail(step, times=None, error=ConnectionError("runtime went away"))
    async with engine.worker():
        saga_id, _device_id = await create(stack, user)
        await engine.advance(timedelta(minutes=1))  # 1 s, 2 s, 4 s between the 4 attempts
        run = await engine.get(saga_id)
    assert engine.faults.attempts(step) == 4
    assert run.error is not None
    assert (run.status, run.error.step) == (SagaStatus.COMPENSATED, step)
    await assert_fully_undone(stack, user, run)
    undone = [
        e.step for e in await engine.history(saga_id) if e.kind is EventKind.COMPENSATION_SUCCEEDED
    ]
    with_undo = ("RESERVE_QUOTA", "ALLOCATE_PORTS", "CREATE_CONTAINER", "CREATE_DEVICE_RECORD")
    assert undone == [
        s for s in reversed(with_undo) if CREATE_STEPS.index(s) <= CREATE_STEPS.index(step)
    ]


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_crash_at_the_pivot_counts_the_device_once(
    stack: DeviceStack, user: Principal, when: Boundary
) -> None:
    engine = kit(stack)
    engine.crash_at("ACTIVATE", when)
    async with engine.worker():
        saga_id, device_id = await create(stack, user)
        await engine.settle()
        assert (await stack.device(device_id)).status is DeviceStatus.CREATING
        assert (await stack.quota(user.user_id)).used == Resources(), "half an activation"
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert engine.faults.attempts("ACTIVATE") == 2
    await assert_running_once(stack, user, run)


async def test_a_crash_after_creating_the_container_finds_it_again(
    stack: DeviceStack, user: Principal
) -> None:
    """The container exists but its creation was never recorded: the next worker reuses it."""
    engine = kit(stack)
    engine.crash_at("CREATE_CONTAINER", "after")
    async with engine.worker():
        saga_id, _device_id = await create(stack, user)
        await engine.settle()
        assert len(await stack.containers()) == 1
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert engine.faults.attempts("CREATE_CONTAINER") == 2
    await assert_running_once(stack, user, run)


async def test_a_boot_outliving_the_deadline_is_undone(make_kit: MakeKit, user: Principal) -> None:
    """A boot allowed longer than the 10-minute deadline is cut by the deadline instead."""
    stack = await make_kit(boot_timeout=timedelta(seconds=900))
    engine = kit(stack)
    engine.faults.hang("INITIALIZE_DEVICE")
    async with engine.worker():
        saga_id, _device_id = await create(stack, user)
        await engine.advance(timedelta(minutes=9))
        assert len(await stack.containers()) == 1
        await engine.advance(timedelta(minutes=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.TIMED_OUT
    await assert_fully_undone(stack, user, run)


async def created_device(stack: DeviceStack, user: Principal) -> str:
    """A RUNNING device; returns its id."""
    saga_id, device_id = await create(stack, user)
    await kit(stack).settle()
    assert (await kit(stack).get(saga_id)).status is SagaStatus.COMPLETED
    return device_id


async def assert_deleted(stack: DeviceStack, user: Principal, run: SagaRun, device_id: str) -> None:
    assert run.status is SagaStatus.COMPLETED, run.error
    device = await stack.device(device_id)
    assert device.status is DeviceStatus.DELETED
    assert await stack.containers() == []
    assert await stack.ports_of_user(user.user_id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    assert await stack.reservations(user.user_id) == {"RETURNED": 1}


async def test_a_delete_retries_past_the_pivot_until_it_succeeds(
    stack: DeviceStack, user: Principal
) -> None:
    engine = kit(stack)
    engine.faults.fail("REMOVE_CONTAINER", times=6, error=ConnectionError("runtime busy"))
    async with engine.worker():
        device_id = await created_device(stack, user)
        deletion = await stack.service.delete_device(user, device_id)
        await engine.advance(timedelta(minutes=5))
        run = await engine.get(deletion.saga_id)
    assert engine.faults.attempts("REMOVE_CONTAINER") == 7, "gave up past the pivot"
    await assert_deleted(stack, user, run, device_id)


@pytest.mark.parametrize("step", ["REMOVE_CONTAINER", "RELEASE_QUOTA"])
async def test_a_delete_crashing_mid_way_is_finished_by_the_next_worker(
    stack: DeviceStack, user: Principal, step: str
) -> None:
    engine = kit(stack)
    engine.crash_at(step, "after")
    async with engine.worker():
        device_id = await created_device(stack, user)
        deletion = await stack.service.delete_device(user, device_id)
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(deletion.saga_id)
    assert engine.faults.attempts(step) == 2
    await assert_deleted(stack, user, run, device_id)


async def test_a_delete_that_fails_for_good_waits_for_an_operator(
    stack: DeviceStack, user: Principal
) -> None:
    engine = kit(stack)
    engine.faults.fail("RELEASE_PORTS", error=NonRetryableError("port table locked by hand"))
    async with engine.worker():
        device_id = await created_device(stack, user)
        deletion = await stack.service.delete_device(user, device_id)
        failed = await stack.wait(deletion.saga_id)
        assert (failed.status, failed.current_step) == (SagaStatus.FAILED, "RELEASE_PORTS")
        assert (await stack.device(device_id)).status is DeviceStatus.DELETING
        await engine.retry(deletion.saga_id, actor="ops", note="unlocked")
        run = await stack.wait(deletion.saga_id)
    await assert_deleted(stack, user, run, device_id)
