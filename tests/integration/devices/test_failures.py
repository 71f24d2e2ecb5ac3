"""Failed creations leave nothing behind: no container, no port, no quota."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cloudphone.devices.create import container_name
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.base import Launch
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.spec import Resources
from cloudphone.devices.sweeper import Sweeper
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaStatus
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.testing import FaultInjector
from tests.support.devices_stack import (
    SMALL,
    DeviceStack,
    StackFactory,
    impostor,
    make_config,
    reap,
    spawn_stray_agent,
)
from tests.support.waiting import eventually


async def assert_fully_undone(stack: DeviceStack, user: Principal, saga_id: str) -> None:
    """The creation left no container, port or quota; its device is ERROR."""
    assert await stack.containers() == []
    assert await stack.ports_of_saga(saga_id) == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())
    assert await stack.reservations(user.user_id) == {"RELEASED": 1}
    [device] = await stack.devices_of(user.user_id)
    assert device.status is DeviceStatus.ERROR
    assert device.error is not None
    assert saga_id in device.error
    assert device.adb_port is None


async def test_boot_failure_after_the_container_exists_undoes_everything(
    stack: DeviceStack, user: Principal, faults: FaultInjector
) -> None:
    """INITIALIZE_DEVICE keeps failing → the container is removed, ports and quota released."""
    faults.fail("INITIALIZE_DEVICE", times=None, error=ConnectionError("adb went away"))
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        run = await stack.wait(created.saga_id)

    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.step == "INITIALIZE_DEVICE"
    assert faults.attempts("INITIALIZE_DEVICE") == 3
    device = await stack.device(created.device.id)
    assert device.error is not None
    assert device.error.startswith(
        "creation failed in INITIALIZE_DEVICE: ConnectionError: adb went away"
    )
    undone = [
        e.step
        for e in await stack.engine.history(created.saga_id)
        if e.kind is EventKind.COMPENSATION_SUCCEEDED
    ]
    assert undone == ["CREATE_DEVICE_RECORD", "CREATE_CONTAINER", "ALLOCATE_PORTS", "RESERVE_QUOTA"]
    await assert_fully_undone(stack, user, created.saga_id)


async def test_port_taken_by_another_process_is_detected_and_undone(
    make_stack: StackFactory, user: Principal
) -> None:
    """The agent cannot bind its port and an impostor answers: serial check fails, all undone."""
    async with impostor() as port:
        stack = await make_stack(make_config(adb_port_min=port, adb_port_max=port))
        async with stack.engine.worker(concurrency=8):
            created = await stack.service.create_device(user, "phone", SMALL)
            run = await stack.wait(created.saga_id)

    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.step == "INITIALIZE_DEVICE"
    assert "impostor" in run.error.message
    await assert_fully_undone(stack, user, created.saga_id)


async def test_no_free_port_compensates_with_the_reason(
    make_stack: StackFactory, user: Principal
) -> None:
    """A one-port ADB range: the second device cannot get a port and is undone cleanly."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack = await make_stack(make_config(adb_port_min=port, adb_port_max=port))
    async with stack.engine.worker(concurrency=8):
        first = await stack.service.create_device(user, "one", SMALL)
        assert (await stack.wait(first.saga_id)).status is SagaStatus.COMPLETED
        second = await stack.service.create_device(user, "two", SMALL)
        run = await stack.wait(second.saga_id)
        assert run.status is SagaStatus.COMPENSATED
        assert run.error is not None
        assert f"no free adb port in {port}-{port}" in run.error.message
        assert (await stack.quota(user.user_id)).used.devices == 1
        assert await stack.ports_of_saga(second.saga_id) == []
        assert [c.name for c in await stack.containers()] == [container_name(first.saga_id)]
        deletion = await stack.service.delete_device(user, first.device.id)
        await stack.wait(deletion.saga_id)
        third = await stack.service.create_device(user, "three", SMALL)
        assert (await stack.wait(third.saga_id)).status is SagaStatus.COMPLETED


async def test_cancel_while_booting_undoes_everything(
    stack: DeviceStack, user: Principal, faults: FaultInjector
) -> None:
    """An operator cancel during INITIALIZE_DEVICE compensates every step, the hung one too."""
    faults.hang("INITIALIZE_DEVICE")
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)

        async def current() -> str | None:
            return (await stack.engine.get(created.saga_id)).current_step

        await eventually(current, lambda step: step == "INITIALIZE_DEVICE", what="booting")
        await eventually(stack.containers, lambda found: len(found) == 1, what="container")
        await stack.engine.cancel(created.saga_id, actor="ops")
        run = await stack.wait(created.saga_id)

    assert run.status is SagaStatus.COMPENSATED
    await assert_fully_undone(stack, user, created.saga_id)


async def test_creation_cancelled_before_it_ran_is_undone(
    stack: DeviceStack, user: Principal
) -> None:
    """Cancelled while PENDING, the engine still undoes the request's reservation and device."""
    created = await stack.service.create_device(user, "phone", SMALL)
    await stack.engine.cancel(created.saga_id, actor="ops")
    assert (await stack.quota(user.user_id)).reserved.devices == 1
    async with stack.engine.worker(concurrency=8):
        run = await stack.wait(created.saga_id)
    assert run.status is SagaStatus.COMPENSATED
    await assert_fully_undone(stack, user, created.saga_id)


async def end_run_without_undo(stack: DeviceStack, saga_id: str) -> None:
    """Simulate a creation run that ended without undoing the request's writes.

    The engine no longer does this by itself (a cancelled PENDING run undoes its first step);
    the sweeper stays as the safety net, e.g. for a run an operator closed by hand.
    """
    async with stack.db.begin() as conn:
        await conn.execute(
            sa.update(saga_runs)
            .where(saga_runs.c.id == saga_id)
            .values(
                status=SagaStatus.COMPENSATED.value,
                owner=None,
                next_run_at=None,
                finished_at=datetime.now(UTC),
            )
        )


async def test_sweeper_repairs_a_creation_that_ended_without_undo(
    stack: DeviceStack, user: Principal
) -> None:
    """A CREATING device whose run ended COMPENSATED with nothing undone is released."""
    created = await stack.service.create_device(user, "phone", SMALL)
    await end_run_without_undo(stack, created.saga_id)
    assert (await stack.quota(user.user_id)).reserved.devices == 1

    report = await Sweeper(stack.engine, stack.runtime).sweep()

    assert created.device.id in report.repaired
    await assert_fully_undone(stack, user, created.saga_id)
    assert created.device.id not in (await Sweeper(stack.engine, stack.runtime).sweep()).repaired


async def test_sweeper_removes_containers_without_a_live_device(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime, unique: str
) -> None:
    """Orphans (unknown saga, deleted device, stray agent) go; live devices' containers stay."""
    async with stack.engine.worker(concurrency=8):
        kept = await stack.service.create_device(user, "kept", SMALL)
        gone = await stack.service.create_device(user, "gone", SMALL)
        await stack.wait(kept.saga_id)
        await stack.wait(gone.saga_id)
        deletion = await stack.service.delete_device(user, gone.device.id)
        await stack.wait(deletion.saga_id)
    unknown = container_name(str(uuid.uuid4()))
    await runtime.create(Launch(unknown, "nobody", 21990, 22990, SMALL))
    # Left over from an earlier create of the deleted device (e.g. a cancelled attempt).
    await runtime.create(Launch(container_name(gone.saga_id), gone.device.id, 21991, 22991, SMALL))
    stray = spawn_stray_agent(runtime.instance, unique, 21992)
    await eventually(
        lambda: asyncio.sleep(0, [p.pid for p in runtime.scan()]),
        lambda pids: stray in pids,
        what="stray agent running",
    )

    report = await Sweeper(stack.engine, stack.runtime).sweep()

    assert report.kept == [container_name(kept.saga_id)]
    assert sorted(report.removed) == sorted([unknown, container_name(gone.saga_id), "stray"])
    assert [c.name for c in await runtime.list()] == [container_name(kept.saga_id)]
    reap(stray)


@pytest.mark.parametrize("step", ["CREATE_CONTAINER", "ALLOCATE_PORTS", "RESERVE_QUOTA"])
async def test_failure_at_each_early_step_is_undone(
    stack: DeviceStack, user: Principal, faults: FaultInjector, step: str
) -> None:
    """Whichever early step fails for good, nothing is left and the quota is free again."""
    faults.fail(step, times=None)
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        run = await stack.wait(created.saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.step == step
    await assert_fully_undone(stack, user, created.saga_id)


async def test_periodic_sweep_repairs_without_being_asked(
    make_stack: StackFactory, user: Principal
) -> None:
    """With a sweep interval, a creation that ended without undo is repaired in the background."""
    stack = await make_stack(make_config(sweep_interval=timedelta(milliseconds=50)))
    await stack.service.sweep_on_start()
    try:
        created = await stack.service.create_device(user, "phone", SMALL)
        await end_run_without_undo(stack, created.saga_id)

        async def status() -> DeviceStatus:
            return (await stack.device(created.device.id)).status

        await eventually(status, lambda s: s is DeviceStatus.ERROR, what="repaired by the loop")
    finally:
        await stack.service.stop_sweeping()
    await assert_fully_undone(stack, user, created.saga_id)
