"""The ``app_install`` saga: an application from storage onto a running device, recorded.

Input (:class:`InstallInput`): the device, the application and what its record says (package,
version, size, SHA-256), whether a downgrade was asked for, and who asked (the APK is read
with their rights). The request reserves the row in the transaction that starts the run, so
a refusal is a synchronous 4xx; RESERVE_INSTALLATION adopts that reservation (or makes it,
for runs started otherwise).

======================  ============================================  ===========================
step                    does                                          compensation
======================  ============================================  ===========================
RESERVE_INSTALLATION    device RUNNING (row locked); the row          this run's reservation
(tx)                    INSTALLING for this run, naming the version   only: the earlier version
                        it replaces; a lower version needs            back, or no row
                        ``allow_downgrade``
FETCH_APK               object → ``<spool>/<run>.apk``, size and      delete the spool file
                        SHA-256 checked against the input; within a
                        deadline sized to the APK
PUSH_AND_INSTALL        ADB push to ``/data/local/tmp``, then ``pm    if the device has exactly
(pivot)                 install -r [-d]``; within a deadline sized    this version and had none
                        to the APK. A retry (or a takeover) first     before: ``pm uninstall``
                        asks ``pm list packages --show-versioncode``
                        whether this version is there already
RECORD_INSTALLED (tx)   the row INSTALLED (retried until it commits)  -
======================  ============================================  ===========================

A device refusal that another attempt would meet again (``INSTALL_FAILED_OLDER_SDK``, a
downgrade the device refuses...) fails the pivot at once and undoes the run; ADB trouble and
transient refusals are retried. A pivot that fails for good while the device shows the new
version of an upgrade cannot put the old one back (its APK is not on the device): the run
FAILED, for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudphone.devices.create import container_name
from cloudphone.devices.installer import REMOTE_TMP, AdbError, AppInstaller, TransferTimeouts
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.records import get_device_txn
from cloudphone.devices.runtimes.base import Container, DeviceRuntime, DeviceRuntimeError
from cloudphone.domain import ConflictError, DomainError, NotFoundError, Principal, Role
from cloudphone.installs.ports import ApkSource
from cloudphone.installs.records import Target, record_installed_txn, release_txn, reserve_txn
from cloudphone.installs.spool import ApkSpool, ChecksumMismatchError
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

log = logging.getLogger("cloudphone.installs")

APP_INSTALL = "app_install"
"""Saga type name."""

INSTALL_TIMEOUT = timedelta(minutes=30)
"""Deadline of an install before its pivot (after it, the run only moves forward)."""

RESERVE_INSTALLATION = "RESERVE_INSTALLATION"
FETCH_APK = "FETCH_APK"
PUSH_AND_INSTALL = "PUSH_AND_INSTALL"
RECORD_INSTALLED = "RECORD_INSTALLED"
STEPS = (RESERVE_INSTALLATION, FETCH_APK, PUSH_AND_INSTALL, RECORD_INSTALLED)
"""The saga's steps, in order; PUSH_AND_INSTALL is the pivot."""


@dataclass(frozen=True)
class InstallInput:
    """The input of ``app_install`` (no secrets: ids, versions and a checksum)."""

    device_id: str
    app_id: str
    package_name: str
    version_code: int
    version_name: str | None
    size: int
    sha256: str
    allow_downgrade: bool
    requested_by: str
    requested_as_admin: bool = False

    @property
    def requester(self) -> Principal:
        """Who asked: the APK is read with their rights."""
        return Principal(self.requested_by, Role.ADMIN if self.requested_as_admin else Role.USER)

    @property
    def target(self) -> Target:
        """The version this run puts on the device."""
        return Target(
            self.device_id, self.app_id, self.package_name, self.version_code, self.version_name
        )


@dataclass(frozen=True)
class Reserved:
    """The output of RESERVE_INSTALLATION."""

    container_name: str
    previous_version_code: int | None


@dataclass(frozen=True)
class Installed:
    """The output of PUSH_AND_INSTALL."""

    already_installed: bool
    """A retry found this version on the device (an earlier attempt installed it)."""


def _now() -> datetime:
    return datetime.now(UTC)


def build_install_saga(
    runtime: DeviceRuntime,
    source: ApkSource,
    spool: ApkSpool,
    *,
    retry: RetryPolicy,
    max_apk_bytes: int,
    timeouts: TransferTimeouts | None = None,
    timeout: timedelta = INSTALL_TIMEOUT,
) -> Saga[InstallInput]:
    """The ``app_install`` saga.

    Args:
        runtime: Where the devices run (ADB sessions to them).
        source: Readable APKs (the apps service, wired by the platform).
        spool: This worker's directory for fetched APKs.
        retry: Retry policy of the steps.
        max_apk_bytes: The largest APK there can be: bounds the step timeouts, each attempt
            being held to a deadline sized to its own APK.
        timeouts: How long fetching, pushing and installing a file of some size may take.
        timeout: The saga's deadline (before the pivot).
    """
    timeouts = timeouts or TransferTimeouts()
    steps = _InstallSteps(runtime, source, spool, timeouts)
    largest = timeouts.for_size(max_apk_bytes)
    saga = Saga(APP_INSTALL, input=InstallInput, timeout=timeout, retry=retry)
    reserve = saga.step(RESERVE_INSTALLATION, transactional=True)(steps.reserve)
    reserve.compensate(steps.release)
    fetch = saga.step(FETCH_APK, timeout=largest + timedelta(seconds=5))(steps.fetch)
    fetch.compensate(steps.discard)
    push = saga.step(PUSH_AND_INSTALL, kind=StepKind.PIVOT, timeout=largest * 3)(
        steps.push_and_install
    )
    push.compensate(steps.undo_install)
    saga.step(RECORD_INSTALLED, transactional=True)(steps.record)
    return saga


class _InstallSteps:
    """The actions and compensations of ``app_install``."""

    def __init__(
        self,
        runtime: DeviceRuntime,
        source: ApkSource,
        spool: ApkSpool,
        timeouts: TransferTimeouts,
    ) -> None:
        self.runtime = runtime
        self.source = source
        self.spool = spool
        self.timeouts = timeouts

    async def reserve(self, ctx: StepContext[InstallInput]) -> Reserved:
        wanted = ctx.input
        device = await get_device_txn(ctx.session, wanted.device_id, for_update=True)
        if device is None or not wanted.requester.can_see(device.owner_id):
            raise NonRetryableError(f"no device {wanted.device_id}")
        if device.status is not DeviceStatus.RUNNING:
            raise NonRetryableError(f"device {device.id} is {device.status}, not RUNNING")
        try:
            row = await reserve_txn(
                ctx.session,
                wanted.target,
                saga_id=ctx.saga_id,
                allow_downgrade=wanted.allow_downgrade,
                now=_now(),
            )
        except DomainError as error:
            raise NonRetryableError(error.message) from error
        return Reserved(container_name(device.create_saga_id), row.previous_version_code)

    async def release(self, ctx: StepContext[InstallInput]) -> None:
        await release_txn(ctx.session, ctx.saga_id, _now())

    async def fetch(self, ctx: StepContext[InstallInput]) -> None:
        await self._fetch(ctx.saga_id, ctx.input)

    async def _fetch(self, saga_id: str, wanted: InstallInput) -> None:
        deadline = self.timeouts.for_size(wanted.size).total_seconds()
        try:
            async with (
                asyncio.timeout(deadline),
                self.source.open(wanted.app_id, wanted.requester) as (info, chunks),
            ):
                if (info.size, info.sha256) != (wanted.size, wanted.sha256):
                    raise NonRetryableError(f"application {wanted.app_id} is not the one asked for")
                await self.spool.receive(saga_id, chunks, size=wanted.size, sha256=wanted.sha256)
        except (NotFoundError, ConflictError, ChecksumMismatchError) as error:
            raise NonRetryableError(str(error)) from error

    async def discard(self, ctx: StepContext[InstallInput]) -> None:
        await self.spool.remove(ctx.saga_id)

    async def push_and_install(self, ctx: StepContext[InstallInput]) -> Installed:
        wanted = ctx.input
        container = await self._running(ctx)
        path = self.spool.path(ctx.saga_id)
        # Taken over on a host without the file, or retried by an operator after the sweeper
        # removed a FAILED run's file: the sweep rule (see .sweep) relies on this fetch.
        if not await self.spool.holds(ctx.saga_id, size=wanted.size, sha256=wanted.sha256):
            await self._fetch(ctx.saga_id, wanted)
        deadline = (self.timeouts.for_size(wanted.size) * 2).total_seconds()
        async with asyncio.timeout(deadline), self.runtime.adb_session(container) as phone:
            if ctx.attempt > 1 and await _has_version(phone, wanted):
                log.info("already installed by an earlier attempt", extra={"saga_id": ctx.saga_id})
                installed = Installed(already_installed=True)
            else:
                await self._install(phone, path, _remote(ctx.saga_id), wanted)
                installed = Installed(already_installed=False)
        await self.spool.remove(ctx.saga_id)
        return installed

    @staticmethod
    async def _install(phone: AppInstaller, path: Path, remote: str, wanted: InstallInput) -> None:
        try:
            await phone.push(path, remote)
            result = await phone.install(
                remote, replace=True, allow_downgrade=wanted.allow_downgrade
            )
        finally:
            with contextlib.suppress(AdbError):
                await phone.remove(remote)
        if result.ok:
            return
        refusal = (
            f"the device refused {wanted.package_name} {wanted.version_code}: {result.message}"
        )
        if result.permanent:
            raise NonRetryableError(refusal)
        raise AdbError(refusal)

    async def undo_install(self, ctx: StepContext[InstallInput]) -> None:
        """The pivot failed for good: take off the device what an attempt may have put there."""
        wanted, reserved = ctx.input, ctx.output(RESERVE_INSTALLATION, Reserved)
        container = await self.runtime.inspect(reserved.container_name)
        if container is None:
            return  # the device is gone, and its apps with it
        if not container.running:
            log.warning(
                "device not running: cannot check for a partial install",
                extra={"saga_id": ctx.saga_id, "device_id": wanted.device_id},
            )
            return
        async with self.runtime.adb_session(container) as phone:
            with contextlib.suppress(AdbError):
                await phone.remove(_remote(ctx.saga_id))
            if not await _has_version(phone, wanted):
                return
            if reserved.previous_version_code == wanted.version_code:
                return  # a reinstall of what was there: nothing changed
            if reserved.previous_version_code is not None:
                raise NonRetryableError(
                    f"device {wanted.device_id} has {wanted.package_name} {wanted.version_code} "
                    f"though the upgrade from {reserved.previous_version_code} is being undone: "
                    "the earlier APK is not on the device; needs an operator"
                )
            await phone.uninstall(wanted.package_name)

    async def _running(self, ctx: StepContext[InstallInput]) -> Container:
        name = ctx.output(RESERVE_INSTALLATION, Reserved).container_name
        container = await self.runtime.inspect(name)
        if container is None:
            raise NonRetryableError(f"device {ctx.input.device_id} has no container any more")
        if not container.running:
            raise DeviceRuntimeError(f"device {ctx.input.device_id} is not running")
        return container

    async def record(self, ctx: StepContext[InstallInput]) -> None:
        if not await record_installed_txn(ctx.session, ctx.saga_id, _now()):
            # Only the device's deletion (which drops its rows) takes a reservation away.
            log.warning(
                "installed, but the reservation is gone (device deleted?)",
                extra={"saga_id": ctx.saga_id, "device_id": ctx.input.device_id},
            )


def _remote(saga_id: str) -> str:
    return f"{REMOTE_TMP}/cloudphone-{saga_id}.apk"


async def _has_version(phone: AppInstaller, wanted: InstallInput) -> bool:
    found = await phone.list_packages(wanted.package_name)
    return found.get(wanted.package_name) == wanted.version_code
