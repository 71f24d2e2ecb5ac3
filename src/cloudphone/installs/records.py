"""Installation rows: reading them, and the conditional moves the sagas and requests make.

Functions ending in ``_txn`` run inside the caller's transaction and never commit. Every move
is conditional on the run holding the row (``saga_id``), so a run never touches a reservation
that is not its own. A row held by a run that is over (compensated, cancelled, resolved by an
operator) no longer refuses anyone: the next install or uninstall takes it over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.domain import ConflictError, NotFoundError
from cloudphone.installs.models import HELD, Installation, InstallStatus, device_apps
from cloudphone.saga import SagaStatus
from cloudphone.saga.state import ACTIVE
from cloudphone.saga.store.tables import saga_runs


@dataclass(frozen=True)
class Target:
    """What an install puts on a device: one version of one application."""

    device_id: str
    app_id: str
    package_name: str
    version_code: int
    version_name: str | None


def _where(device_id: str, package_name: str) -> list[ColumnElement[bool]]:
    return [device_apps.c.device_id == device_id, device_apps.c.package_name == package_name]


async def get_txn(
    conn: AsyncConnection, device_id: str, package_name: str, *, for_update: bool = False
) -> Installation | None:
    """The row of ``package_name`` on the device, or None."""
    stmt = select(device_apps).where(*_where(device_id, package_name))
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    return None if row is None else Installation.from_row(row)


async def by_saga_txn(conn: AsyncConnection, saga_id: str) -> Installation | None:
    """The row a run holds (or last moved), or None."""
    row = (await conn.execute(select(device_apps).where(device_apps.c.saga_id == saga_id))).first()
    return None if row is None else Installation.from_row(row)


async def list_txn(conn: AsyncConnection, device_id: str) -> list[Installation]:
    """The device's rows, by package name."""
    stmt = (
        select(device_apps)
        .where(device_apps.c.device_id == device_id)
        .order_by(device_apps.c.package_name)
    )
    return [Installation.from_row(row) for row in await conn.execute(stmt)]


async def run_of_txn(conn: AsyncConnection, row: Installation) -> tuple[SagaStatus, bool] | None:
    """The status of the run named by ``row`` and whether an operator resolved it, or None."""
    run = (
        await conn.execute(
            select(saga_runs.c.status, saga_runs.c.resolution).where(saga_runs.c.id == row.saga_id)
        )
    ).first()
    return None if run is None else (SagaStatus(run.status), run.resolution is not None)


async def holder_txn(conn: AsyncConnection, row: Installation) -> SagaStatus | None:
    """The status of the run still holding ``row`` (active, or FAILED and unresolved), or None."""
    if row.status not in HELD:
        return None
    run = await run_of_txn(conn, row)
    if run is None:
        return None
    status, resolved = run
    holds = status in ACTIVE or (status is SagaStatus.FAILED and not resolved)
    return status if holds else None


async def _refuse_if_held(conn: AsyncConnection, row: Installation, saga_id: str) -> None:
    holder = await holder_txn(conn, row)
    if holder is None or row.saga_id == saga_id:
        return
    doing = "installing" if row.status is InstallStatus.INSTALLING else "uninstalling"
    failed = holder is SagaStatus.FAILED
    stuck = " (it FAILED: an operator must retry or resolve it)" if failed else ""
    raise ConflictError(
        f"saga {row.saga_id} is {doing} {row.package_name} on device {row.device_id}{stuck}: "
        "one install or uninstall at a time",
        code="installation_busy",
    )


def _installed_version(row: Installation) -> tuple[str | None, int | None, str | None]:
    """What the device had before the row's run (for a row whose run is over or in flight)."""
    if row.status is InstallStatus.INSTALLING:
        return row.previous_app_id, row.previous_version_code, row.previous_version_name
    return row.app_id, row.version_code, row.version_name


async def reserve_txn(
    conn: AsyncConnection,
    target: Target,
    *,
    saga_id: str,
    allow_downgrade: bool,
    now: datetime,
) -> Installation:
    """Hold the row INSTALLING for ``saga_id`` (a new row, or over the installed version).

    Adopts the row when ``saga_id`` holds it already (the request reserved it).

    Raises:
        ConflictError: Another run holds the row (``installation_busy``), or the version is
            lower than the installed one and downgrades were not allowed (``downgrade``).
    """
    row = await get_txn(conn, target.device_id, target.package_name, for_update=True)
    if row is not None and row.saga_id == saga_id and row.status is InstallStatus.INSTALLING:
        return row
    values = {
        "status": InstallStatus.INSTALLING.value,
        "app_id": target.app_id,
        "version_code": target.version_code,
        "version_name": target.version_name,
        "saga_id": saga_id,
        "updated_at": now,
    }
    if row is None:
        try:
            await conn.execute(
                insert(device_apps).values(
                    device_id=target.device_id,
                    package_name=target.package_name,
                    created_at=now,
                    **values,
                )
            )
        except IntegrityError:  # a concurrent reservation committed first
            raise ConflictError(
                f"{target.package_name} is being installed on device {target.device_id} "
                "by another request",
                code="installation_busy",
            ) from None
    else:
        await _refuse_if_held(conn, row, saga_id)
        previous_app, previous_code, previous_name = _installed_version(row)
        older = previous_code is not None and target.version_code < previous_code
        if older and not allow_downgrade:
            raise ConflictError(
                f"{target.package_name} version code {previous_code} is installed on device "
                f"{target.device_id}; {target.version_code} is older: a downgrade must be "
                'asked for ("allow_downgrade": true)',
                code="downgrade",
            )
        await conn.execute(
            update(device_apps)
            .where(*_where(target.device_id, target.package_name))
            .values(
                previous_app_id=previous_app,
                previous_version_code=previous_code,
                previous_version_name=previous_name,
                **values,
            )
        )
    reserved = await get_txn(conn, target.device_id, target.package_name)
    assert reserved is not None
    return reserved


async def release_txn(conn: AsyncConnection, saga_id: str, now: datetime) -> None:
    """Undo ``saga_id``'s reservation: the earlier version back, or no row (idempotent)."""
    row = (
        await conn.execute(
            select(device_apps)
            .where(
                device_apps.c.saga_id == saga_id,
                device_apps.c.status == InstallStatus.INSTALLING.value,
            )
            .with_for_update()
        )
    ).first()
    if row is None:
        return
    held = Installation.from_row(row)
    where = _where(held.device_id, held.package_name)
    if held.previous_app_id is None or held.previous_version_code is None:
        await conn.execute(delete(device_apps).where(*where))
        return
    await conn.execute(
        update(device_apps)
        .where(*where)
        .values(
            status=InstallStatus.INSTALLED.value,
            app_id=held.previous_app_id,
            version_code=held.previous_version_code,
            version_name=held.previous_version_name,
            previous_app_id=None,
            previous_version_code=None,
            previous_version_name=None,
            updated_at=now,
        )
    )


async def record_installed_txn(conn: AsyncConnection, saga_id: str, now: datetime) -> bool:
    """INSTALLING → INSTALLED for the run holding the row; False when it holds none."""
    stmt = (
        update(device_apps)
        .where(
            device_apps.c.saga_id == saga_id,
            device_apps.c.status == InstallStatus.INSTALLING.value,
        )
        .values(
            status=InstallStatus.INSTALLED.value,
            installed_at=now,
            previous_app_id=None,
            previous_version_code=None,
            previous_version_name=None,
            updated_at=now,
        )
    )
    return bool((await conn.execute(stmt)).rowcount == 1)


async def mark_uninstalling_txn(
    conn: AsyncConnection, device_id: str, package_name: str, *, saga_id: str, now: datetime
) -> Installation:
    """Hold the row UNINSTALLING for ``saga_id`` (adopted when it holds it already).

    Raises:
        NotFoundError: The device has no such package (as far as the platform knows).
        ConflictError: Another run holds the row (``installation_busy``).
    """
    row = await get_txn(conn, device_id, package_name, for_update=True)
    if row is None:
        raise NotFoundError(f"device {device_id} has no application {package_name!r}")
    if row.saga_id != saga_id or row.status is not InstallStatus.UNINSTALLING:
        await _refuse_if_held(conn, row, saga_id)
        await conn.execute(
            update(device_apps)
            .where(*_where(device_id, package_name))
            .values(status=InstallStatus.UNINSTALLING.value, saga_id=saga_id, updated_at=now)
        )
    marked = await get_txn(conn, device_id, package_name)
    assert marked is not None
    return marked


async def remove_txn(conn: AsyncConnection, saga_id: str) -> None:
    """Delete the row ``saga_id`` is uninstalling (nothing if it is gone)."""
    await conn.execute(
        delete(device_apps).where(
            device_apps.c.saga_id == saga_id,
            device_apps.c.status == InstallStatus.UNINSTALLING.value,
        )
    )


async def drop_device_txn(conn: AsyncConnection, device_id: str) -> None:
    """Forget every installation of a device (its deletion removed them with it)."""
    await conn.execute(delete(device_apps).where(device_apps.c.device_id == device_id))
