"""Fixtures of the devices tests: a local runtime per test and the wired service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.domain import Principal
from cloudphone.saga import SagaEngine
from cloudphone.saga.testing import FaultInjector
from tests.support.devices_stack import (
    DeviceStack,
    StackFactory,
    build_sagas,
    create_devices_schema,
    local_runtime,
    make_config,
    remove_all,
)


@pytest.fixture
def user(unique: str) -> Principal:
    """A user of its own per test (tests share the PostgreSQL database)."""
    return Principal(f"user-{unique}")


@pytest.fixture
def devices_config() -> DevicesConfig:
    """Devices settings for tests."""
    return make_config()


@pytest.fixture
def faults() -> FaultInjector:
    """Fault injection hooks of the test's engine."""
    return FaultInjector()


@pytest.fixture
async def runtime(tmp_path: Path, unique: str) -> AsyncIterator[LocalRuntime]:
    """A local runtime of this test; every agent it started is killed at the end."""
    rt = local_runtime(tmp_path / "local-runtime", f"test-{unique}")
    yield rt
    await remove_all(rt)
    await rt.close()
    assert rt.scan() == []


@pytest.fixture
def make_stack(
    make_engine: Callable[..., SagaEngine],
    runtime: LocalRuntime,
    devices_config: DevicesConfig,
    faults: FaultInjector,
) -> StackFactory:
    """Build a stack (engine without a worker, schema, service) on the local runtime."""

    async def make(config: DevicesConfig | None = None) -> DeviceStack:
        config = config or devices_config
        engine = make_engine(build_sagas(runtime, config), hooks=faults)
        await engine.create_schema()
        await create_devices_schema(engine.db)
        return DeviceStack(engine, DeviceService(engine, config, runtime), runtime, config)

    return make


@pytest.fixture
async def stack(make_stack: StackFactory) -> DeviceStack:
    """The default stack of a test."""
    return await make_stack()
