"""The ``device_delete`` saga: stop, remove the container, free ports and quota, mark DELETED.

Input (:class:`DeleteInput`): ``device_id``. The first step, MARK_DELETING, is the pivot: it
(re)asserts the DELETING status that the API set in the request transaction and records which
run deletes the device; its output (:class:`DeletionTarget`) names the container and the
creation the later steps undo. From there the saga only moves forward: every later step is
retried (capped backoff, within its retry budget) and is idempotent, so running one twice, or
deleting a device twice, is harmless.

==========================  =======================================================
step                        does
==========================  =======================================================
MARK_DELETING (tx, pivot)   RUNNING/RESTARTING/STOPPED/ERROR -> DELETING (this run)
STOP_CONTAINER              stop it gracefully (nothing if it is gone)
REMOVE_CONTAINER            force-remove it by name (nothing if it is gone)
RELEASE_PORTS (tx)          free the device's ports
RELEASE_QUOTA (tx)          its reservation CONSUMED -> RETURNED (usage goes down)
MARK_DELETED (tx)           DELETING -> DELETED, ports cleared on the row; the
                            clean-ups given to the factory (installs drops the
                            device's installations), in the same transaction
==========================  =======================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices import quota
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.create import container_name, step_retry_policy
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.ports import release_device_ports_txn, release_saga_ports_txn
from cloudphone.devices.records import get_device_txn, update_device_txn
from cloudphone.devices.runtimes.base import DeviceRuntime
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

DEVICE_DELETE = "device_delete"
"""Saga type name."""

DELETABLE = frozenset(
    {
        DeviceStatus.RUNNING,
        DeviceStatus.RESTARTING,
        DeviceStatus.STOPPED,
        DeviceStatus.ERROR,
        DeviceStatus.DELETING,
    }
)
"""Statuses MARK_DELETING accepts."""

MARK_DELETING = "MARK_DELETING"

DeviceCleanup = Callable[[AsyncConnection, str], Awaitable[None]]
"""Forgets what another part of the platform keeps about a device: ``cleanup(conn, device_id)``
runs in MARK_DELETED's transaction (so it must be idempotent, like the step)."""


@dataclass(frozen=True)
class DeleteInput:
    """The input of ``device_delete``."""

    device_id: str


@dataclass(frozen=True)
class DeletionTarget:
    """The output of ``MARK_DELETING``: what the later steps remove and release."""

    container_name: str
    create_saga_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def build_delete_saga(
    runtime: DeviceRuntime,
    config: DevicesConfig,
    *,
    retry: RetryPolicy | None = None,
    cleanups: Sequence[DeviceCleanup] = (),
) -> Saga[DeleteInput]:
    """The ``device_delete`` saga on ``runtime``.

    Args:
        runtime: Where the device's container runs.
        config: Timeouts and retry settings.
        retry: Retry policy of the steps (default from ``config``).
        cleanups: Run by MARK_DELETED in its transaction (the platform gives installs').
    """
    saga = Saga(DEVICE_DELETE, input=DeleteInput, retry=retry or step_retry_policy(config))
    steps = _DeleteSteps(runtime, tuple(cleanups))
    calls = config.runtime_call_timeout
    saga.step(MARK_DELETING, transactional=True, kind=StepKind.PIVOT)(steps.mark_deleting)
    saga.step("STOP_CONTAINER", timeout=calls)(steps.stop_container)
    saga.step("REMOVE_CONTAINER", timeout=calls)(steps.remove_container)
    saga.step("RELEASE_PORTS", transactional=True)(steps.release_ports)
    saga.step("RELEASE_QUOTA", transactional=True)(steps.release_quota)
    saga.step("MARK_DELETED", transactional=True)(steps.mark_deleted)
    return saga


class _DeleteSteps:
    """The actions of ``device_delete``, over one runtime."""

    def __init__(self, runtime: DeviceRuntime, cleanups: tuple[DeviceCleanup, ...]) -> None:
        self.runtime = runtime
        self.cleanups = cleanups

    async def mark_deleting(self, ctx: StepContext[DeleteInput]) -> DeletionTarget:
        device_id = ctx.input.device_id
        device = await get_device_txn(ctx.session, device_id, for_update=True)
        if device is None:
            raise NonRetryableError(f"no device {device_id}")
        if device.delete_saga_id not in (None, ctx.saga_id):
            raise NonRetryableError(f"device {device_id} is deleted by {device.delete_saga_id}")
        if device.status is not DeviceStatus.DELETED:
            if device.status not in DELETABLE:
                raise NonRetryableError(f"device {device_id} is {device.status}: not deletable")
            await update_device_txn(
                ctx.session,
                device_id,
                expect=DELETABLE,
                now=_now(),
                status=DeviceStatus.DELETING,
                delete_saga_id=ctx.saga_id,
            )
        return DeletionTarget(
            container_name=container_name(device.create_saga_id),
            create_saga_id=device.create_saga_id,
        )

    async def stop_container(self, ctx: StepContext[DeleteInput]) -> None:
        await self.runtime.stop(_target(ctx).container_name)

    async def remove_container(self, ctx: StepContext[DeleteInput]) -> None:
        await self.runtime.remove(_target(ctx).container_name)

    async def release_ports(self, ctx: StepContext[DeleteInput]) -> None:
        await release_device_ports_txn(ctx.session, ctx.input.device_id)
        await release_saga_ports_txn(ctx.session, _target(ctx).create_saga_id)

    async def release_quota(self, ctx: StepContext[DeleteInput]) -> None:
        now, creation = _now(), _target(ctx).create_saga_id
        # A device that reached RUNNING gives its usage back; one whose creation never
        # finished may at most hold a reservation. Both moves are conditional: no-op twice.
        await quota.return_txn(ctx.session, creation, now)
        await quota.release_txn(ctx.session, creation, now)

    async def mark_deleted(self, ctx: StepContext[DeleteInput]) -> None:
        now = _now()
        await update_device_txn(
            ctx.session,
            ctx.input.device_id,
            expect={DeviceStatus.DELETING},
            now=now,
            status=DeviceStatus.DELETED,
            deleted_at=now,
            adb_port=None,
            stream_port=None,
        )
        for cleanup in self.cleanups:
            await cleanup(ctx.session, ctx.input.device_id)


def _target(ctx: StepContext[DeleteInput]) -> DeletionTarget:
    return ctx.output(MARK_DELETING, DeletionTarget)
