"""The ``app_uninstall`` saga: an application off a device, then its row removed.

Input (:class:`UninstallInput`): the device and the package. Its first step is the pivot
(like ``device_delete``): from there every step is retried until it succeeds, and each is
idempotent, so running one twice is harmless.

=======================  =========================================================
step                     does
=======================  =========================================================
MARK_UNINSTALLING (tx,   the row UNINSTALLING for this run (the request marked it
pivot)                   already; another run holding it refuses)
PM_UNINSTALL             ``pm uninstall``; "not installed" counts as done, and so
                         does a device whose container is gone
REMOVE_RECORD (tx)       delete the row
=======================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cloudphone.devices.create import container_name
from cloudphone.devices.records import get_device_txn
from cloudphone.devices.runtimes.base import DeviceRuntime, DeviceRuntimeError
from cloudphone.domain import DomainError
from cloudphone.installs.records import mark_uninstalling_txn, remove_txn
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

APP_UNINSTALL = "app_uninstall"
"""Saga type name."""

MARK_UNINSTALLING = "MARK_UNINSTALLING"


@dataclass(frozen=True)
class UninstallInput:
    """The input of ``app_uninstall``."""

    device_id: str
    package_name: str


@dataclass(frozen=True)
class Marked:
    """The output of MARK_UNINSTALLING."""

    container_name: str


def build_uninstall_saga(runtime: DeviceRuntime, *, retry: RetryPolicy) -> Saga[UninstallInput]:
    """The ``app_uninstall`` saga on ``runtime`` (retry: the steps' policy)."""
    saga = Saga(APP_UNINSTALL, input=UninstallInput, retry=retry)
    saga.step(MARK_UNINSTALLING, transactional=True, kind=StepKind.PIVOT)(_mark)

    async def uninstall(ctx: StepContext[UninstallInput]) -> None:
        name = ctx.output(MARK_UNINSTALLING, Marked).container_name
        container = await runtime.inspect(name)
        if container is None:
            return  # the device is gone, and its apps with it
        if not container.running:
            raise DeviceRuntimeError(f"device {ctx.input.device_id} is not running")
        async with runtime.adb_session(container) as phone:
            await phone.uninstall(ctx.input.package_name)

    saga.step("PM_UNINSTALL")(uninstall)
    saga.step("REMOVE_RECORD", transactional=True)(_remove)
    return saga


async def _mark(ctx: StepContext[UninstallInput]) -> Marked:
    device = await get_device_txn(ctx.session, ctx.input.device_id)
    if device is None:
        raise NonRetryableError(f"no device {ctx.input.device_id}")
    try:
        await mark_uninstalling_txn(
            ctx.session,
            ctx.input.device_id,
            ctx.input.package_name,
            saga_id=ctx.saga_id,
            now=datetime.now(UTC),
        )
    except DomainError as error:
        raise NonRetryableError(error.message) from error
    return Marked(container_name(device.create_saga_id))


async def _remove(ctx: StepContext[UninstallInput]) -> None:
    await remove_txn(ctx.session, ctx.saga_id)
