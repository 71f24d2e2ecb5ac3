"""The devices service wired for tests: engine, sagas, service, runtime, and what to assert on."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloudphone.devices.config import DevicesConfig, QuotaDefaults
from cloudphone.devices.create import DEVICE_CREATE, build_create_saga
from cloudphone.devices.delete import build_delete_saga
from cloudphone.devices.models import device_ports, devices, metadata, quota_reservations
from cloudphone.devices.quota import Quota
from cloudphone.devices.records import Device, get_device_txn
from cloudphone.devices.runtimes.base import Container, DeviceRuntime
from cloudphone.devices.runtimes.local import AGENT_MODULE, LocalRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.devices.spec import DeviceSpec, QuotaLimits
from cloudphone.domain import Principal, Role
from cloudphone.saga import Database, RetryPolicy, Saga, SagaEngine, SagaRun

ADMIN = Principal("admin", Role.ADMIN)

SMALL = DeviceSpec(cpu_millis=500, memory_mb=256, storage_mb=1024, resolution="720x1280", dpi=320)
"""A cheap device spec."""

FAST_RETRY = RetryPolicy(
    max_attempts=3,
    initial_interval=timedelta(milliseconds=20),
    max_interval=timedelta(milliseconds=100),
    jitter=False,
)
"""Retries in milliseconds so failing creations compensate quickly."""


def make_config(**overrides: Any) -> DevicesConfig:
    """Devices settings for tests: port ranges below the ephemeral range, short timeouts."""
    values: dict[str, Any] = {
        "adb_port_min": 21000,
        "adb_port_max": 21999,
        "stream_port_min": 22000,
        "stream_port_max": 22999,
        "boot_timeout": timedelta(seconds=10),
        "runtime_call_timeout": timedelta(seconds=20),
        "retry_initial_interval": timedelta(milliseconds=20),
        "retry_max_attempts": 3,
        "default_quota": QuotaDefaults(max_devices=5),
        **overrides,
    }
    return DevicesConfig(**values)


def limits(
    devices_: int = 5, cpu_millis: int = 64000, memory_mb: int = 65536, storage_mb: int = 262144
) -> QuotaLimits:
    """Quota limits with generous per-device maxima."""
    return QuotaLimits(
        max_devices=devices_,
        max_cpu_millis=cpu_millis,
        max_memory_mb=memory_mb,
        max_storage_mb=storage_mb,
        device_max_cpu_millis=4000,
        device_max_memory_mb=8192,
        device_max_storage_mb=32768,
    )


def build_sagas(runtime: DeviceRuntime, config: DevicesConfig) -> list[Saga]:
    """Both device sagas with millisecond retries."""
    return [
        build_create_saga(runtime, config, retry=FAST_RETRY),
        build_delete_saga(runtime, config, retry=FAST_RETRY),
    ]


async def create_devices_schema(db: Database) -> None:
    """The devices tables (the engine's tables come from ``engine.create_schema``)."""
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def remove_all(runtime: DeviceRuntime) -> None:
    """Remove every container of the runtime (and stray local agents)."""
    for container in await runtime.list():
        await runtime.remove(container.name)
    if isinstance(runtime, LocalRuntime):
        for process in runtime.scan():
            await runtime.remove(process.name)


@dataclass
class DeviceStack:
    """One engine with the device sagas, the service, and assertions helpers."""

    engine: SagaEngine
    service: DeviceService
    runtime: DeviceRuntime
    config: DevicesConfig

    @property
    def db(self) -> Database:
        """The database."""
        return self.engine.db

    async def wait(self, saga_id: str, seconds: float = 30.0) -> SagaRun:
        """Wait until the run is terminal."""
        return await self.engine.wait(saga_id, timeout=timedelta(seconds=seconds))

    async def device(self, device_id: str) -> Device:
        """The device row (no access check)."""
        async with self.db.read() as conn:
            device = await get_device_txn(conn, device_id)
        assert device is not None
        return device

    async def quota(self, user_id: str) -> Quota:
        """The user's quota and usage."""
        return await self.service.get_quota(ADMIN, user_id)

    async def set_limits(self, user_id: str, quota_limits: QuotaLimits) -> None:
        """Set a user's quota as an admin."""
        await self.service.set_quota(ADMIN, user_id, quota_limits)

    async def ports_of_user(self, user_id: str) -> list[int]:
        """Ports held by the user's devices (through the devices they were allocated for)."""
        stmt = (
            sa.select(device_ports.c.port)
            .join(devices, devices.c.id == device_ports.c.device_id)
            .where(devices.c.owner_id == user_id)
        )
        async with self.db.read() as conn:
            return sorted((await conn.execute(stmt)).scalars())

    async def ports_of_saga(self, saga_id: str) -> list[int]:
        """Ports a creation saga holds."""
        stmt = sa.select(device_ports.c.port).where(device_ports.c.saga_id == saga_id)
        async with self.db.read() as conn:
            return sorted((await conn.execute(stmt)).scalars())

    async def reservations(self, user_id: str) -> dict[str, int]:
        """The user's reservation rows counted by status."""
        stmt = (
            sa.select(quota_reservations.c.status, sa.func.count())
            .where(quota_reservations.c.user_id == user_id)
            .group_by(quota_reservations.c.status)
        )
        async with self.db.read() as conn:
            return {status: int(n) for status, n in await conn.execute(stmt)}

    async def devices_of(self, user_id: str) -> list[Device]:
        """Every device row of the user, DELETED included."""
        return await self.service.list_devices(ADMIN, owner_id=user_id, include_deleted=True)

    async def containers(self) -> list[Container]:
        """Every container the runtime has."""
        return await self.runtime.list()

    async def runs_of(self, user_id: str, saga_type: str = DEVICE_CREATE) -> list[SagaRun]:
        """Saga runs the user started."""
        return await self.engine.list(saga_type=saga_type, started_by=user_id, limit=1000)


StackFactory = Callable[..., Awaitable["DeviceStack"]]
"""``make_stack(config=None)`` of the devices integration tests."""


async def wait_all(stack: DeviceStack, saga_ids: list[str], seconds: float = 45.0) -> list[SagaRun]:
    """Wait for many runs at once."""
    return list(await asyncio.gather(*(stack.wait(s, seconds) for s in saga_ids)))


def local_runtime(path: Path, instance: str) -> LocalRuntime:
    """A local runtime with its own state directory and instance id."""
    return LocalRuntime(path, instance=instance, stop_timeout=3.0)


def spawn_stray_agent(instance: str, token: str, adb_port: int) -> int:
    """Start an agent of ``instance`` that has no record; returns its pid.

    As if its platform died right after spawning it. Reap it with :func:`reap`.
    """
    argv = [
        sys.executable, "-m", AGENT_MODULE, "--adb-port", str(adb_port),
        "--stream-port", str(adb_port + 1000), "--serial", "stray", "--name", "stray",
        "--instance", instance, "--token", token,
    ]  # fmt: skip
    return os.posix_spawn(sys.executable, argv, dict(os.environ))


def reap(pid: int) -> None:
    """Wait for a child process started by a test (it must be exiting)."""
    os.waitpid(pid, 0)


def proc_limits(pid: int) -> str:
    """``/proc/<pid>/limits`` of a process."""
    return Path(f"/proc/{pid}/limits").read_text()


@contextlib.asynccontextmanager
async def impostor(port: int = 0) -> AsyncIterator[int]:
    """A foreign server on ``port`` (0: a free one) that answers the handshake as someone else."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().split()
        nonce = line[1] if len(line) > 1 else "-"
        writer.write(f"CNXN impostor {nonce} device::ro.product.model=evil;\n".encode())
        await writer.drain()
        writer.close()

    # A killed agent's listening socket can outlive its pid for a moment on a loaded machine:
    # retry the bind (a port still taken past the deadline fails the test with the OSError).
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        try:
            server = await asyncio.start_server(answer, "127.0.0.1", port)
            break
        except OSError as error:
            if error.errno != errno.EADDRINUSE or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
    async with server:
        yield server.sockets[0].getsockname()[1]
