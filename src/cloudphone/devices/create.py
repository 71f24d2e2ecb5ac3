"""The ``device_create`` saga: quota, ports, container, record, boot, activation.

Input data: ``device_id``, ``owner_id``, ``name`` and ``spec`` (see :meth:`DeviceSpec.to_data`).
The API inserts the CREATING device row and reserves the quota in the request transaction that
starts the run; every step is nevertheless complete on its own, so a run started any other way
(CLI, tests) does the same work.

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
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext

DEVICE_CREATE = "device_create"
"""Saga type name."""

CREATE_TIMEOUT = timedelta(minutes=10)
"""Deadline of a creation."""

CONTAINER_PREFIX = "cloudphone-"


def container_name(create_saga_id: str) -> str:
    """The container name of the device this run makes.

    Derived from the run id only, so every attempt, worker and compensation of the run finds
    the same container.
    """
    return f"{CONTAINER_PREFIX}{create_saga_id}"


def saga_id_of_container(name: str) -> str | None:
    """Inverse of :func:`container_name`; None for containers not named by a creation."""
    return name.removeprefix(CONTAINER_PREFIX) if name.startswith(CONTAINER_PREFIX) else None


def create_retry_policy(config: DevicesConfig) -> RetryPolicy:
    """Retries of the creation steps, from the settings."""
    initial = timedelta(seconds=config.retry_initial_seconds)
    return RetryPolicy(
        max_attempts=config.retry_max_attempts,
        initial_interval=initial,
        max_interval=max(initial * 16, timedelta(seconds=30)),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _failure_reason(ctx: StepContext) -> str:
    """Why the creation was undone, for the device's ``error``.

    For example ``creation failed in INITIALIZE_DEVICE: DeviceBootError: ... (saga <id>)``.
    """
    cause = ctx.compensation_cause or "failed"
    error = ctx.error
    where = f" in {error.step}" if error is not None and error.step else ""
    what = f": {error.type}: {error.message}" if error is not None else ""
    return f"creation {cause}{where}{what} (saga {ctx.saga_id})"[:2000]


def _spec(ctx: StepContext) -> DeviceSpec:
    return DeviceSpec.from_data(ctx.data["spec"])


def build_create_saga(
    runtime: DeviceRuntime, config: DevicesConfig, *, retry: RetryPolicy | None = None
) -> Saga:
    """The ``device_create`` saga on ``runtime``.

    Args:
        runtime: Where containers run.
        config: Port ranges, quota defaults and timeouts.
        retry: Retry policy of the steps (default from ``config``).
    """
    saga = Saga(DEVICE_CREATE, timeout=CREATE_TIMEOUT, retry=retry or create_retry_policy(config))
    runtime_timeout = timedelta(seconds=config.runtime_call_timeout_seconds)

    @saga.step("RESERVE_QUOTA", transactional=True)
    async def reserve_quota(ctx: StepContext) -> dict[str, Any] | None:
        try:
            await quota.reserve_txn(
                ctx.session,
                saga_id=ctx.saga_id,
                user_id=ctx.data["owner_id"],
                device_id=ctx.data["device_id"],
                spec=_spec(ctx),
                defaults=config.default_quota,
                now=_now(),
            )
        except DomainError as error:
            raise NonRetryableError(error.message) from error
        return None

    @reserve_quota.compensate
    async def release_quota(ctx: StepContext) -> None:
        await quota.release_txn(ctx.session, ctx.saga_id, _now())
        await update_device_txn(
            ctx.session,
            ctx.data["device_id"],
            expect={DeviceStatus.CREATING},
            now=_now(),
            status=DeviceStatus.ERROR,
            error=_failure_reason(ctx),
        )

    @saga.step("ALLOCATE_PORTS", transactional=True)
    async def allocate_ports(ctx: StepContext) -> dict[str, Any] | None:
        ports = await allocate_txn(
            ctx.session,
            saga_id=ctx.saga_id,
            device_id=ctx.data["device_id"],
            ranges=ranges_from(config),
            now=_now(),
        )
        return {"adb_port": ports.adb, "stream_port": ports.stream}

    @allocate_ports.compensate
    async def free_ports(ctx: StepContext) -> None:
        await release_saga_ports_txn(ctx.session, ctx.saga_id)

    @saga.step("CREATE_CONTAINER", timeout=runtime_timeout)
    async def create_container(ctx: StepContext) -> dict[str, Any] | None:
        launch = Launch(
            name=container_name(ctx.saga_id),
            serial=ctx.data["device_id"],
            adb_port=ctx.data["adb_port"],
            stream_port=ctx.data["stream_port"],
            spec=_spec(ctx),
            labels={
                LABEL_DEVICE: ctx.data["device_id"],
                LABEL_SAGA: ctx.saga_id,
                LABEL_OWNER: ctx.data["owner_id"],
            },
        )
        try:
            container = await runtime.create(launch)
        except PermanentRuntimeError as error:
            raise NonRetryableError(str(error)) from error
        return {
            "container_name": container.name,
            "container_id": container.id,
            "adb_host": container.adb_host,
        }

    @create_container.compensate
    async def remove_container(ctx: StepContext) -> None:
        await runtime.remove(container_name(ctx.saga_id))

    @saga.step("CREATE_DEVICE_RECORD", transactional=True)
    async def create_record(ctx: StepContext) -> dict[str, Any] | None:
        await _record_device(ctx, runtime.kind)
        return None

    @create_record.compensate
    async def unbind_record(ctx: StepContext) -> None:
        await update_device_txn(
            ctx.session,
            ctx.data["device_id"],
            expect={DeviceStatus.CREATING},
            now=_now(),
            container_id=None,
            adb_port=None,
            stream_port=None,
        )

    boot_timeout = config.boot_timeout_seconds

    @saga.step("INITIALIZE_DEVICE", timeout=timedelta(seconds=boot_timeout + 15))
    async def initialize(ctx: StepContext) -> dict[str, Any] | None:
        name = container_name(ctx.saga_id)
        container = await runtime.inspect(name)
        if container is None:
            raise NonRetryableError(f"container {name} is gone")
        if not container.running:
            try:
                container = await runtime.start(name)
            except ContainerNotFoundError as error:
                raise NonRetryableError(str(error)) from error
        banner = await runtime.initialize(
            container, ctx.data["device_id"], _spec(ctx), timeout=boot_timeout
        )
        return {"banner": dict(banner.properties)}

    @saga.step("ACTIVATE", transactional=True, pivot=True)
    async def activate(ctx: StepContext) -> dict[str, Any] | None:
        now = _now()
        if not await quota.consume_txn(ctx.session, ctx.saga_id, now):
            raise NonRetryableError(f"saga {ctx.saga_id} holds no quota reservation")
        if not await update_device_txn(
            ctx.session,
            ctx.data["device_id"],
            expect={DeviceStatus.CREATING},
            now=now,
            status=DeviceStatus.RUNNING,
            error=None,
        ):
            raise NonRetryableError(f"device {ctx.data['device_id']} is no longer CREATING")
        return None

    return saga


async def _record_device(ctx: StepContext, runtime_kind: str) -> None:
    """Bind the container to the device row, inserting the row when the run has none."""
    device_id = ctx.data["device_id"]
    device = await get_device_txn(ctx.session, device_id)
    now = _now()
    if device is None:
        try:
            await insert_device_txn(
                ctx.session,
                device_id=device_id,
                owner_id=ctx.data["owner_id"],
                name=ctx.data["name"],
                spec=_spec(ctx),
                create_saga_id=ctx.saga_id,
                idempotency_key=None,
                now=now,
            )
        except DomainError as error:
            raise NonRetryableError(error.message) from error
    elif device.create_saga_id != ctx.saga_id:
        raise NonRetryableError(f"device {device_id} belongs to saga {device.create_saga_id}")
    bound = await update_device_txn(
        ctx.session,
        device_id,
        expect={DeviceStatus.CREATING},
        now=now,
        runtime=runtime_kind,
        container_name=ctx.data["container_name"],
        container_id=ctx.data["container_id"],
        adb_host=ctx.data["adb_host"],
        adb_port=ctx.data["adb_port"],
        stream_port=ctx.data["stream_port"],
    )
    if not bound:
        raise NonRetryableError(f"device {device_id} is no longer CREATING")
