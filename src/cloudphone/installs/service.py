"""Use cases of installs: put an application on a device, list a device's, take one off.

Plain async methods taking a :class:`~cloudphone.domain.Principal`; they raise domain errors
and know nothing of HTTP. An install or uninstall is checked and reserved in the transaction
that starts its saga, so a refusal (not your device, not an application you may read, the
device not RUNNING, a downgrade not asked for, another run on the package) is a synchronous
error and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.records import Device, get_device_txn
from cloudphone.domain import ConflictError, InvalidInputError, NotFoundError, Principal
from cloudphone.installs.install import APP_INSTALL, InstallInput
from cloudphone.installs.models import HELD, Installation, InstallStatus
from cloudphone.installs.ports import ApkSource
from cloudphone.installs.records import (
    by_saga_txn,
    get_txn,
    holder_txn,
    list_txn,
    mark_uninstalling_txn,
    reserve_txn,
    run_of_txn,
)
from cloudphone.installs.uninstall import APP_UNINSTALL, UninstallInput
from cloudphone.saga import SagaEngine, SagaRun
from cloudphone.saga.state import ACTIVE


@dataclass(frozen=True)
class InstallAccepted:
    """An accepted install: its saga and the reserved row.

    Attributes:
        saga_id: The ``app_install`` run.
        installation: The row as the request left it (None for a repeated key whose run
            is over and left no row).
        created: False when an Idempotency-Key found an earlier request's run.
    """

    saga_id: str
    installation: Installation | None
    created: bool = True


@dataclass(frozen=True)
class UninstallAccepted:
    """An accepted uninstall: its saga and the row (UNINSTALLING)."""

    saga_id: str
    installation: Installation


class InstallService:
    """The installs use cases.

    Args:
        engine: The saga engine (its database holds the devices and installs tables).
        source: Readable APKs (the apps service, wired by the platform).
    """

    def __init__(self, engine: SagaEngine, source: ApkSource) -> None:
        self.engine = engine
        self.db = engine.db
        self.source = source

    async def install_app(
        self,
        principal: Principal,
        device_id: str,
        app_id: str,
        *,
        allow_downgrade: bool = False,
        idempotency_key: str | None = None,
    ) -> InstallAccepted:
        """Reserve the row INSTALLING and start ``app_install``, in one transaction.

        Raises:
            InvalidInputError: An empty application id.
            NotFoundError: No such device of the caller's, or no application they may read.
            ConflictError: The application is not AVAILABLE (``not_available``), the device
                is not RUNNING (``device_not_running``), another run holds the package on
                the device (``installation_busy``), the version is lower than the installed
                one (``downgrade``), or the key was used for another request
                (``idempotency_key_reused``).
        """
        if not app_id.strip():
            raise InvalidInputError("app_id must not be empty")
        wanted = {"device_id": device_id, "app_id": app_id, "allow_downgrade": allow_downgrade}
        if idempotency_key is not None:
            earlier = await self.engine.find(APP_INSTALL, idempotency_key)
            if earlier is not None:
                return await self._replay(earlier, wanted)
        await self._visible_device(principal, device_id)  # not yours: 404 before the app
        app = await self.source.describe(app_id, principal)
        data = InstallInput(
            device_id=device_id,
            app_id=app.id,
            package_name=app.package_name,
            version_code=app.version_code,
            version_name=app.version_name,
            size=app.size,
            sha256=app.sha256,
            allow_downgrade=allow_downgrade,
            requested_by=principal.user_id,
            requested_as_admin=principal.is_admin,
        )
        async with self.db.begin() as conn:
            await self._running_device_txn(conn, principal, device_id)
            started = await self.engine.start_run(
                APP_INSTALL,
                data,
                session=conn,
                idempotency_key=idempotency_key,
                started_by=principal.user_id,
            )
            if started.created:
                row = await reserve_txn(
                    conn,
                    data.target,
                    saga_id=started.id,
                    allow_downgrade=allow_downgrade,
                    now=datetime.now(UTC),
                )
                return InstallAccepted(started.id, row)
        # A concurrent request with the same key inserted its run first.
        return await self._replay(await self.engine.get(started.id), wanted)

    async def _replay(self, earlier: SagaRun, wanted: dict[str, object]) -> InstallAccepted:
        if not earlier.started_with(wanted):
            raise ConflictError(
                "this Idempotency-Key was used for a different install request",
                code="idempotency_key_reused",
            )
        async with self.db.read() as conn:
            row = await by_saga_txn(conn, earlier.id)
            if row is None:
                row = await get_txn(conn, earlier.input["device_id"], earlier.input["package_name"])
        return InstallAccepted(earlier.id, row, created=False)

    async def list_installations(self, principal: Principal, device_id: str) -> list[Installation]:
        """The device's applications, by package name.

        A row left held by a run that is over (FAILED, resolved or not) shows FAILED.

        Raises:
            NotFoundError: No such device of the caller's.
        """
        async with self.db.read() as conn:
            await self._visible_device_txn(conn, principal, device_id)
            rows = await list_txn(conn, device_id)
            return [await _as_listed(conn, row) for row in rows]

    async def uninstall_app(
        self, principal: Principal, device_id: str, package_name: str
    ) -> UninstallAccepted:
        """Mark the row UNINSTALLING and start ``app_uninstall``; asking again answers that run.

        Raises:
            NotFoundError: No such device of the caller's, or no such package on it.
            ConflictError: The device is not RUNNING (``device_not_running``), or another run
                holds the package on it (``installation_busy``).
        """
        async with self.db.begin() as conn:
            await self._running_device_txn(conn, principal, device_id)
            row = await get_txn(conn, device_id, package_name, for_update=True)
            if row is None:
                raise NotFoundError(f"device {device_id} has no application {package_name!r}")
            if row.status is InstallStatus.UNINSTALLING and await holder_txn(conn, row):
                return UninstallAccepted(row.saga_id, row)
            saga_id = await self.engine.start(
                APP_UNINSTALL,
                UninstallInput(device_id=device_id, package_name=package_name),
                session=conn,
                started_by=principal.user_id,
            )
            marked = await mark_uninstalling_txn(
                conn, device_id, package_name, saga_id=saga_id, now=datetime.now(UTC)
            )
        return UninstallAccepted(saga_id, marked)

    async def _visible_device(self, principal: Principal, device_id: str) -> Device:
        async with self.db.read() as conn:
            return await self._visible_device_txn(conn, principal, device_id)

    @staticmethod
    async def _visible_device_txn(
        conn: AsyncConnection, principal: Principal, device_id: str, *, lock: bool = False
    ) -> Device:
        device = await get_device_txn(conn, device_id, for_update=lock)
        if device is None or not principal.can_see(device.owner_id):
            raise NotFoundError(f"no device {device_id}")
        return device

    async def _running_device_txn(
        self, conn: AsyncConnection, principal: Principal, device_id: str
    ) -> Device:
        """The caller's device, locked: installs on one device take turns."""
        device = await self._visible_device_txn(conn, principal, device_id, lock=True)
        if device.status is not DeviceStatus.RUNNING:
            raise ConflictError(
                f"device {device_id} is {device.status}: apps are installed and removed on a "
                "RUNNING device",
                code="device_not_running",
            )
        return device


async def _as_listed(conn: AsyncConnection, row: Installation) -> Installation:
    """A held row whose run is over shows FAILED: what the device has is not known.

    It is known again once an operator retries the run, or another install or uninstall
    takes the row over.
    """
    if row.status not in HELD:
        return row
    run = await run_of_txn(conn, row)
    if run is not None and run[0] not in ACTIVE:
        return dataclasses.replace(row, status=InstallStatus.FAILED)
    return row
