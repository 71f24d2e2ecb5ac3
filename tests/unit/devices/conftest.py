"""Devices on the test kit: both device sagas on a MemoryEngine over the local runtime."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.create import build_create_saga
from cloudphone.devices.delete import build_delete_saga
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.saga import Database
from cloudphone.saga.testing import MemoryEngine
from tests.support.devices_stack import (
    DeviceStack,
    create_devices_schema,
    local_runtime,
    make_config,
    remove_all,
)

MakeKit = Callable[..., Awaitable[DeviceStack]]
"""``make_kit(**config_overrides)``: a stack on the kit with these devices settings."""


def kit_config(**overrides: Any) -> DevicesConfig:
    """Production retries and timeouts (the clock is manual), ports of these tests' own."""
    values: dict[str, Any] = {
        "adb_port_min": 23000,
        "adb_port_max": 23499,
        "stream_port_min": 23500,
        "stream_port_max": 23999,
        "boot_timeout": timedelta(seconds=60),
        "runtime_call_timeout": timedelta(seconds=60),
        "retry_initial_interval": timedelta(seconds=1),
        "retry_max_attempts": 4,
        **overrides,
    }
    return make_config(**values)


@pytest.fixture
def user() -> Principal:
    return Principal("user-1")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    """A local runtime of this test; every agent it started is killed at the end."""
    rt = local_runtime(tmp_path / "local-runtime", f"kit-{uuid.uuid4().hex[:8]}")
    yield rt
    await remove_all(rt)
    await rt.close()
    assert rt.scan() == []


@pytest.fixture
async def make_kit(tmp_path: Path, runtime: LocalRuntime) -> AsyncIterator[MakeKit]:
    """Build the device sagas and service on a MemoryEngine; the devices tables in SQLite."""
    databases: list[Database] = []

    async def make(**overrides: Any) -> DeviceStack:
        config = kit_config(**overrides)
        db = Database(f"sqlite+aiosqlite:///{tmp_path / f'devices{len(databases)}.db'}")
        databases.append(db)
        await create_devices_schema(db)
        sagas = [build_create_saga(runtime, config), build_delete_saga(runtime, config)]
        engine = MemoryEngine(sagas, database=db)
        return DeviceStack(engine, DeviceService(engine, config, runtime), runtime, config)

    yield make
    for db in databases:
        await db.dispose()


@pytest.fixture
async def stack(make_kit: MakeKit) -> DeviceStack:
    """The default stack of a test."""
    return await make_kit()
