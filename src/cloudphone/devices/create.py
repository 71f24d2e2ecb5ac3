"""The ``device_create`` saga: quota, ports, container, record, boot, activation.

Input (:class:`CreateInput`): ``device_id``, ``owner_id``, ``name`` and ``spec``. Steps read
earlier outputs by step: the ports (:class:`AllocatedPorts`) and the container
(:class:`CreatedContainer`). The API inserts the CREATING device row and reserves the quota in
the request transaction that starts the run; every step is nevertheless complete on its own,
so a run started any other way (CLI, tests) does the same work.

=====================  ======================================  ================================
step                   does                                    compensation
=====================  ======================================  ================================
RESERVE_QUOTA (tx)     one conditional UPDATE of the quota     release this run's reservation;
                       row + a reservation row for this run    device -> ERROR
ALLOCATE_PORTS (tx)    an ADB and a stream port, unique        free this run's ports
CREATE_CONTAINER       container named from the run id;        remove the container by name
                       CPU, memory and pids limits
CREATE_DEVICE_RECORD   bind container, host and ports to the   unbind them
(tx)                   device row (insert it if missing)
INITIALIZE_DEVICE      wait for the handshake with its own     -
                       serial, then init commands (bounded)
ACTIVATE (tx, pivot)   device RUNNING; reservation -> usage    -
=====================  ======================================  ================================

Deadline: 10 minutes. Any failure before ACTIVATE undoes everything: no container, port or
quota is left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudphone.devices import quota
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.ports import allocate_txn, ranges_from, release_saga_ports_txn
from cloudphone.devices.records import get_device_txn, insert_device_txn, update_device_txn
from cloudphone.devices.runtimes.base import (
    LABEL_DEVICE,
    LABEL_OWNER,
    LABEL_SAGA,
    ContainerNotFoundError,
    DeviceRuntime,
    Launch,
    PermanentRuntimeError,
)
from cloudphone.devices.spec import DeviceSpec
from cloudphone.domain import DomainError
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

DEVICE_CREATE = "device_create"
"""Saga type name."""

CREATE_TIMEOUT = timedelta(minutes=10)
"""Deadline of a creation."""

CONTAINER_PREFIX = "cloudphone-"

ALLOCATE_PORTS = "ALLOCATE_PORTS"
CREATE_CONTAINER = "CREATE_CONTAINER"


@dataclass(frozen=True)
class CreateInput:
    """The input of ``device_create``: which device, whose, and its resources."""

    device_id: str
    owner_id: str
    name: str
    spec: DeviceSpec


@dataclass(frozen=True)
class AllocatedPorts:
    """The output of ``ALLOCATE_PORTS``."""

    adb_port: int
    stream_port: int


@dataclass(frozen=True)
class CreatedContainer:
    """The output of ``CREATE_CONTAINER``."""

    container_name: str
    container_id: str
    adb_host: str


def container_name(create_saga_id: str) -> str:
    """The container name of the device this run makes.

    Derived from the run id only, so every attempt, worker and compensation of the run finds
    the same container.
    """
    return f"{CONTAINER_PREFIX}{create_saga_id}"


def saga_id_of_container(name: str) -> str | None:
    """Inverse of :func:`container_name`; None for containers not named by a creation."""
    return name.removeprefix(CONTAINER_PREFIX) if name.startswith(CONTAINER_PREFIX) else None


def step_retry_policy(config: DevicesConfig) -> RetryPolicy:
    """Retries of the device sagas' steps, from the settings (after a pivot they never run out)."""
    initial = config.retry_initial_interval
    return RetryPolicy(
        max_attempts=config.retry_max_attempts,
        initial_interval=initial,
        max_interval=max(initial * 16, timedelta(seconds=30)),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _failure_reason(ctx: StepContext[CreateInput]) -> str:
    """Why the creation was undone, for the device's ``error``.

    For example ``creation failed in INITIALIZE_DEVICE: DeviceBootError: ... (saga <id>)``.
    """
    cause = ctx.compensation_cause or "failed"
    error = ctx.error
    where = f" in {error.step}" if error is not None and error.step else ""
    what = f": {error.type}: {error.message}" if error is not None else ""
    return f"creation {cause}{where}{what} (saga {ctx.saga_id})"[:2000]


def build_create_saga(
    runtime: DeviceRuntime, config: DevicesConfig, *, retry: RetryPolicy | None = None
) -> Saga[CreateInput]:
    """The ``device_create`` saga on ``runtime``.

    Args:
        runtime: Where containers run.
        config: Port ranges, quota defaults and timeouts.
        retry: Retry policy of the steps (default from ``config``).
    """
    saga = Saga(
        DEVICE_CREATE,
        input=CreateInput,
        timeout=CREATE_TIMEOUT,
        retry=retry or step_retry_policy(config),
    )
    steps = _CreateSteps(runtime, config)
    calls = config.runtime_call_timeout
    boot = config.boot_timeout + timedelta(seconds=15)
    quota_step = saga.step("RESERVE_QUOTA", transactional=True)(steps.reserve_quota)
    quota_step.compensate(steps.release_quota)
    ports_step = saga.step(ALLOCATE_PORTS, transactional=True)(steps.allocate_ports)
    ports_step.compensate(steps.free_ports)
    container_step = saga.step(CREATE_CONTAINER, timeout=calls)(steps.create_container)
    container_step.compensate(steps.remove_container)
    record_step = saga.step("CREATE_DEVICE_RECORD", transactional=True)(steps.record_device)
    record_step.compensate(steps.unbind_record)
    saga.step("INITIALIZE_DEVICE", timeout=boot)(steps.initialize)
    saga.step("ACTIVATE", transactional=True, kind=StepKind.PIVOT)(steps.activate)
    return saga


class _CreateSteps:
    """The actions and compensations of ``device_create``, over one runtime."""

    def __init__(self, runtime: DeviceRuntime, config: DevicesConfig) -> None:
        self.runtime = runtime
        self.config = config

    async def reserve_quota(self, ctx: StepContext[CreateInput]) -> None:
        try:
            await quota.reserve_txn(
                ctx.session,
                saga_id=ctx.saga_id,
                user_id=ctx.input.owner_id,
                device_id=ctx.input.device_id,
                spec=ctx.input.spec,
                defaults=self.config.default_quota,
                now=_now(),
            )
        except DomainError as error:
            raise NonRetryableError(error.message) from error

    async def release_quota(self, ctx: StepContext[CreateInput]) -> None:
        # Always the last compensation to run: the creation is over, the device says why.
        await quota.release_txn(ctx.session, ctx.saga_id, _now())
        await update_device_txn(
            ctx.session,
            ctx.input.device_id,
            expect={DeviceStatus.CREATING},
            now=_now(),
            status=DeviceStatus.ERROR,
            error=_failure_reason(ctx),
        )

    async def allocate_ports(self, ctx: StepContext[CreateInput]) -> AllocatedPorts:
        ports = await allocate_txn(
            ctx.session,
            saga_id=ctx.saga_id,
            device_id=ctx.input.device_id,
            ranges=ranges_from(self.config),
            now=_now(),
        )
        return AllocatedPorts(adb_port=ports.adb, stream_port=ports.stream)

    async def free_ports(self, ctx: StepContext[CreateInput]) -> None:
        await release_saga_ports_txn(ctx.session, ctx.saga_id)

    async def create_container(self, ctx: StepContext[CreateInput]) -> CreatedContainer:
        device, ports = ctx.input, ctx.output(ALLOCATE_PORTS, AllocatedPorts)
        launch = Launch(
            name=container_name(ctx.saga_id),
            serial=device.device_id,
            adb_port=ports.adb_port,
            stream_port=ports.stream_port,
            spec=device.spec,
            labels={
                LABEL_DEVICE: device.device_id,
                LABEL_SAGA: ctx.saga_id,
                LABEL_OWNER: device.owner_id,
            },
        )
        try:
            container = await self.runtime.create(launch)
        except PermanentRuntimeError as error:
            raise NonRetryableError(str(error)) from error
        return CreatedContainer(
            container_name=container.name, container_id=container.id, adb_host=container.adb_host
        )

    async def remove_container(self, ctx: StepContext[CreateInput]) -> None:
        # By name, not by a returned id: a cancelled create may still have made it.
        await self.runtime.remove(container_name(ctx.saga_id))

    async def record_device(self, ctx: StepContext[CreateInput]) -> None:
        """Bind the container to the device row, inserting the row when the run has none."""
        device_id = ctx.input.device_id
        ports = ctx.output(ALLOCATE_PORTS, AllocatedPorts)
        made = ctx.output(CREATE_CONTAINER, CreatedContainer)
        device = await get_device_txn(ctx.session, device_id)
        if device is None:
            await _insert_device(ctx)
        elif device.create_saga_id != ctx.saga_id:
            raise NonRetryableError(f"device {device_id} belongs to saga {device.create_saga_id}")
        bound = await update_device_txn(
            ctx.session,
            device_id,
            expect={DeviceStatus.CREATING},
            now=_now(),
            runtime=self.runtime.kind,
            container_name=made.container_name,
            container_id=made.container_id,
            adb_host=made.adb_host,
            adb_port=ports.adb_port,
            stream_port=ports.stream_port,
        )
        if not bound:
            raise NonRetryableError(f"device {device_id} is no longer CREATING")

    async def unbind_record(self, ctx: StepContext[CreateInput]) -> None:
        await update_device_txn(
            ctx.session,
            ctx.input.device_id,
            expect={DeviceStatus.CREATING},
            now=_now(),
            container_id=None,
            adb_port=None,
            stream_port=None,
        )

    async def initialize(self, ctx: StepContext[CreateInput]) -> dict[str, Any]:
        name = container_name(ctx.saga_id)
        container = await self.runtime.inspect(name)
        if container is None:
            raise NonRetryableError(f"container {name} is gone")
        if not container.running:
            try:
                container = await self.runtime.start(name)
            except ContainerNotFoundError as error:
                raise NonRetryableError(str(error)) from error
        banner = await self.runtime.initialize(
            container,
            ctx.input.device_id,
            ctx.input.spec,
            timeout=self.config.boot_timeout.total_seconds(),
        )
        return {"banner": dict(banner.properties)}

    async def activate(self, ctx: StepContext[CreateInput]) -> None:
        now = _now()
        if not await quota.consume_txn(ctx.session, ctx.saga_id, now):
            raise NonRetryableError(f"saga {ctx.saga_id} holds no quota reservation")
        if not await update_device_txn(
            ctx.session,
            ctx.input.device_id,
            expect={DeviceStatus.CREATING},
            now=now,
            status=DeviceStatus.RUNNING,
            error=None,
        ):
            raise NonRetryableError(f"device {ctx.input.device_id} is no longer CREATING")


async def _insert_device(ctx: StepContext[CreateInput]) -> None:
    """The device row of a run started without one (not through the API)."""
    try:
        await insert_device_txn(
            ctx.session,
            device_id=ctx.input.device_id,
            owner_id=ctx.input.owner_id,
            name=ctx.input.name,
            spec=ctx.input.spec,
            create_saga_id=ctx.saga_id,
            idempotency_key=None,
            now=_now(),
        )
    except DomainError as error:
        raise NonRetryableError(error.message) from error
