"""The device watch: a RUNNING device whose process died is restarted, or shown STOPPED."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloudphone.devices.create import container_name
from cloudphone.devices.links import LineLink
from cloudphone.devices.models import DeviceStatus, devices
from cloudphone.devices.records import Device
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.saga import SagaStatus
from tests.support.devices_stack import (
    SMALL,
    DeviceStack,
    impostor,
    local_runtime,
    make_config,
)
from tests.support.waiting import eventually


async def running(stack: DeviceStack, user: Principal, name: str = "phone") -> Device:
    """A device created through its saga, RUNNING."""
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, name, SMALL)
        assert (await stack.wait(created.saga_id)).status is SagaStatus.COMPLETED
    return await stack.device(created.device.id)


def agent_pid(runtime: LocalRuntime, device: Device) -> int:
    """The pid of the device's agent process."""
    [pid] = [p.pid for p in runtime.scan() if p.name == container_name(device.create_saga_id)]
    return pid


async def kill_agent(runtime: LocalRuntime, device: Device) -> int:
    """SIGKILL the device's process (as when its worker dies) and wait until it is gone."""
    pid = agent_pid(runtime, device)
    os.kill(pid, signal.SIGKILL)
    name = container_name(device.create_saga_id)

    async def state() -> bool:
        container = await runtime.inspect(name)
        return container is not None and container.running

    await eventually(state, lambda up: not up, what="agent dead")
    return pid


async def answers(device: Device) -> str:
    """The serial the device's ADB port answers with."""
    assert device.adb_port is not None
    return (await LineLink(device.adb_host or "", device.adb_port).probe("watch")).serial


async def test_a_killed_device_process_is_restarted_by_one_round(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """Its process died: the next round restarts it; RUNNING, answering, a new process."""
    device = await running(stack, user)
    dead = await kill_agent(runtime, device)

    report = await stack.service.watch()

    assert device.id in report.restarted
    assert device.id not in report.failed
    back = await stack.device(device.id)
    assert (back.status, back.error) == (DeviceStatus.RUNNING, None)
    assert await answers(back) == device.id
    assert agent_pid(runtime, back) != dead
    again = await stack.service.watch()
    assert device.id not in again.restarted  # healthy now: nothing to do


async def test_a_round_lists_the_runtime_once_however_many_devices(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """Cheap: healthy devices cost one runtime listing per round, no call per device."""
    for i in range(3):
        await running(stack, user, f"phone-{i}")
    counting = CountingRuntime(runtime)
    watcher = DeviceService(stack.engine, stack.config, counting)  # type: ignore[arg-type]

    report = await watcher.watch()

    assert report.checked >= 3
    assert counting.calls == Counter({"list": 1})


async def test_a_device_that_cannot_start_again_shows_stopped_with_why(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """Its port is taken meanwhile: STOPPED with the reason; ``start`` works once it is free."""
    device = await running(stack, user)
    await kill_agent(runtime, device)
    assert device.adb_port is not None
    async with impostor(device.adb_port):
        report = await stack.service.watch()

    assert device.id in report.failed
    stopped = await stack.device(device.id)
    assert stopped.status is DeviceStatus.STOPPED
    assert stopped.error is not None
    assert "stopped unexpectedly and it did not start again" in stopped.error
    assert "impostor" in stopped.error
    assert [c.running for c in await stack.containers()] == [False]
    started = await stack.service.start_device(user, device.id)
    assert (started.status, started.error) == (DeviceStatus.RUNNING, None)
    assert await answers(started) == device.id


async def test_two_workers_watching_restart_the_device_once(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime, unique: str
) -> None:
    """Two processes notice at once: the conditional claim lets one restart it, once."""
    device = await running(stack, user)
    await kill_agent(runtime, device)
    twin = LocalRuntime(runtime.state_dir, instance=runtime.instance, stop_timeout=3.0)
    other = DeviceService(stack.engine, stack.config, twin)
    try:
        reports = await asyncio.gather(stack.service.watch(), other.watch())
        restarts = [r for report in reports for r in report.restarted if r == device.id]
        assert restarts == [device.id]
        assert len([p for p in runtime.scan() if p.name == device.container_name]) == 1
        assert await answers(await stack.device(device.id)) == device.id
    finally:
        await twin.close()


async def test_a_restart_left_by_a_dead_worker_is_taken_over(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime
) -> None:
    """RESTARTING for longer than a restart takes (its restarter died): claimed again."""
    device = await running(stack, user)
    await kill_agent(runtime, device)
    await set_status(stack, device.id, DeviceStatus.RESTARTING, datetime.now(UTC))

    fresh = await stack.service.watch()  # a live restarter may be on it: left alone
    assert device.id not in fresh.restarted
    assert (await stack.device(device.id)).status is DeviceStatus.RESTARTING
    await set_status(
        stack, device.id, DeviceStatus.RESTARTING, datetime.now(UTC) - timedelta(minutes=1)
    )
    taken = await stack.service.watch()

    assert device.id in taken.restarted
    back = await stack.device(device.id)
    assert back.status is DeviceStatus.RUNNING
    assert await answers(back) == device.id


async def test_stopped_devices_and_other_runtimes_devices_are_left_alone(
    stack: DeviceStack, user: Principal, runtime: LocalRuntime, tmp_path: Path, unique: str
) -> None:
    """A STOPPED device stays stopped; a device this runtime does not list is not touched."""
    stopped = await running(stack, user, "stopped")
    await stack.service.stop_device(user, stopped.id)
    elsewhere = await running(stack, user, "elsewhere")
    await kill_agent(runtime, elsewhere)
    other_machine = local_runtime(tmp_path / "other-machine", f"other-{unique}")
    watcher = DeviceService(stack.engine, stack.config, other_machine)

    report = await watcher.watch()

    assert {stopped.id, elsewhere.id}.isdisjoint(report.restarted + report.failed)
    assert (await stack.device(stopped.id)).status is DeviceStatus.STOPPED
    assert (await stack.device(elsewhere.id)).status is DeviceStatus.RUNNING
    assert other_machine.scan() == []


async def test_the_background_watch_restarts_within_its_interval(
    make_stack: Any, user: Principal, runtime: LocalRuntime
) -> None:
    """``start_watching``: a killed device is RUNNING with a new process a few rounds later."""
    stack = await make_stack(make_config(watch_interval=timedelta(milliseconds=100)))
    device = await running(stack, user)
    dead = await kill_agent(runtime, device)
    await stack.service.start_watching()
    try:

        async def state() -> tuple[DeviceStatus, list[int]]:
            pids = [p.pid for p in runtime.scan() if p.name == device.container_name]
            return (await stack.device(device.id)).status, pids

        await eventually(
            state,
            lambda s: s[0] is DeviceStatus.RUNNING and bool(s[1]) and dead not in s[1],
            timeout=10,
            what="device restarted",
        )
    finally:
        await stack.service.stop_watching()
    assert await answers(await stack.device(device.id)) == device.id


async def set_status(
    stack: DeviceStack, device_id: str, status: DeviceStatus, updated_at: datetime
) -> None:
    """Write a device's status and ``updated_at`` directly (a worker's claim, then its death)."""
    async with stack.db.begin() as conn:
        await conn.execute(
            sa.update(devices)
            .where(devices.c.id == device_id)
            .values(status=status.value, updated_at=updated_at)
        )


class CountingRuntime:
    """Counts the calls made to a real runtime (to show what a round costs)."""

    def __init__(self, inner: LocalRuntime) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.inner, name)
