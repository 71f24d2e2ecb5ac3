"""The real-ADB code path (adb-shell, as for Redroid) against the local agents' minimal adbd."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from cloudphone.devices.adb import AdbLink
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.links import DISPLAY_PROP, LineLink
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.saga import SagaEngine, SagaStatus
from tests.support.devices_stack import (
    SMALL,
    DeviceStack,
    build_sagas,
    create_devices_schema,
    remove_all,
)

ANIMATIONS_OFF = "settings put global window_animation_scale 0"
MakeAdbStack = Callable[[list[str]], Awaitable[DeviceStack]]


@pytest.fixture
async def make_adb_stack(
    make_engine: Callable[..., SagaEngine],
    devices_config: DevicesConfig,
    tmp_path: Path,
    unique: str,
) -> AsyncIterator[MakeAdbStack]:
    """Stacks whose local runtime initialises devices over real ADB with these init commands."""
    runtimes: list[LocalRuntime] = []

    async def make(init_commands: list[str]) -> DeviceStack:
        runtime = LocalRuntime(
            tmp_path / f"adb-runtime-{len(runtimes)}",
            instance=f"adb-{unique}-{len(runtimes)}",
            protocol="adb",
            init_commands=init_commands,
        )
        runtimes.append(runtime)
        engine = make_engine(build_sagas(runtime, devices_config))
        await engine.create_schema()
        await create_devices_schema(engine.db)
        service = DeviceService(engine, devices_config, runtime)
        return DeviceStack(engine, service, runtime, devices_config)

    yield make
    for runtime in runtimes:
        await remove_all(runtime)
        assert runtime.scan() == []


async def test_device_is_initialised_over_adb(
    make_adb_stack: MakeAdbStack, user: Principal
) -> None:
    """INITIALIZE_DEVICE over ADB: boot_completed + serial checked, wm size/density applied."""
    stack = await make_adb_stack([ANIMATIONS_OFF])
    async with stack.engine.worker(concurrency=4):
        created = await stack.service.create_device(user, "phone", SMALL)
        run = await stack.wait(created.saga_id)
    assert run.status is SagaStatus.COMPLETED, run.error
    device = await stack.device(created.device.id)
    assert device.adb_port is not None
    banner = await AdbLink("127.0.0.1", device.adb_port).probe("-")
    assert banner.serial == device.id
    line = LineLink("127.0.0.1", device.adb_port)
    assert await line.get_prop(DISPLAY_PROP) == "720x1280@320"
    assert await line.get_prop("settings.global.window_animation_scale") == "0"


async def test_failing_init_command_undoes_the_creation(
    make_adb_stack: MakeAdbStack, user: Principal
) -> None:
    """An init command that fails on the device (exit 127) → compensated with its output."""
    stack = await make_adb_stack(["reboot bootloader"])
    async with stack.engine.worker(concurrency=4):
        created = await stack.service.create_device(user, "phone", SMALL)
        run = await stack.wait(created.saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert "'reboot bootloader' failed (exit 127)" in run.error.message
    assert (await stack.device(created.device.id)).status is DeviceStatus.ERROR
    assert await stack.containers() == []
