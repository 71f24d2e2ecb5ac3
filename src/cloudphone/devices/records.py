"""Device rows: the :class:`Device` record and the statements that read and change it.

Functions ending in ``_txn`` run inside the caller's transaction and never commit. Status
changes are conditional on the current status, so two actors racing on one device cannot
both win (the loser sees ``False`` and decides what that means).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices.models import DeviceStatus, devices
from cloudphone.devices.spec import DeviceSpec
from cloudphone.domain import ConflictError

LIVE = frozenset(DeviceStatus) - {DeviceStatus.DELETED}
"""Statuses in which a device holds its name."""


@dataclass(frozen=True)
class Device:
    """One device as stored.

    Attributes:
        id: Device id (a UUID); also the serial its agent answers the handshake with.
        owner_id: The user who owns it.
        name: Unique among the owner's devices that are not DELETED.
        status: Where it is in its life cycle.
        spec: Resources and screen.
        runtime: ``local`` or ``docker`` once its container exists.
        container_name: Derived from the creation saga id.
        container_id: The runtime's id of the container.
        adb_host: Where its ADB port listens.
        adb_port: Its ADB port.
        stream_port: Its screen-stream port.
        create_saga_id: The ``device_create`` run that made it.
        delete_saga_id: The ``device_delete`` run removing it, if any.
        error: Why it is in ERROR.
        created_at: When it was requested.
        updated_at: Last change.
        deleted_at: When it became DELETED.
    """

    id: str
    owner_id: str
    name: str
    status: DeviceStatus
    spec: DeviceSpec
    runtime: str | None
    container_name: str | None
    container_id: str | None
    adb_host: str | None
    adb_port: int | None
    stream_port: int | None
    create_saga_id: str
    delete_saga_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


def device_from_row(row: Row[Any]) -> Device:
    """Map a ``devices`` row."""
    m = row._mapping
    spec = DeviceSpec(
        cpu_millis=m["cpu_millis"],
        memory_mb=m["memory_mb"],
        storage_mb=m["storage_mb"],
        resolution=m["resolution"],
        dpi=m["dpi"],
        android_version=m["android_version"],
    )
    plain = {f: m[f] for f in Device.__dataclass_fields__ if f not in ("status", "spec")}
    return Device(status=DeviceStatus(m["status"]), spec=spec, **plain)


async def insert_device_txn(
    conn: AsyncConnection,
    *,
    device_id: str,
    owner_id: str,
    name: str,
    spec: DeviceSpec,
    create_saga_id: str,
    idempotency_key: str | None,
    now: datetime,
) -> None:
    """Insert a CREATING device.

    Raises:
        ConflictError: The owner has a live device with that name, or a creation with the
            same idempotency key is in flight. The transaction must then be rolled back.
    """
    try:
        await conn.execute(
            insert(devices).values(
                id=device_id,
                owner_id=owner_id,
                name=name,
                status=DeviceStatus.CREATING.value,
                create_saga_id=create_saga_id,
                idempotency_key=idempotency_key,
                created_at=now,
                updated_at=now,
                **spec.to_data(),
            )
        )
    except IntegrityError as error:
        if "idempotency_key" in str(error.orig):
            raise ConflictError(
                "a creation with this Idempotency-Key is already in progress",
                code="idempotency_conflict",
            ) from None
        raise ConflictError(
            f"you already have a device named {name!r}", code="duplicate_name"
        ) from None


async def get_device_txn(
    conn: AsyncConnection, device_id: str, *, for_update: bool = False
) -> Device | None:
    """The device with that id, or None."""
    stmt = select(devices).where(devices.c.id == device_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    return None if row is None else device_from_row(row)


async def get_by_saga_txn(conn: AsyncConnection, create_saga_id: str) -> Device | None:
    """The device a ``device_create`` run made, or None."""
    row = (
        await conn.execute(select(devices).where(devices.c.create_saga_id == create_saga_id))
    ).first()
    return None if row is None else device_from_row(row)


async def get_by_key_txn(conn: AsyncConnection, owner_id: str, key: str) -> Device | None:
    """The device an earlier request with this idempotency key created, or None."""
    stmt = select(devices).where(devices.c.owner_id == owner_id, devices.c.idempotency_key == key)
    row = (await conn.execute(stmt)).first()
    return None if row is None else device_from_row(row)


async def find_live_by_name_txn(conn: AsyncConnection, owner_id: str, name: str) -> Device | None:
    """The owner's device holding ``name`` (any status but DELETED), or None."""
    stmt = select(devices).where(
        devices.c.owner_id == owner_id,
        devices.c.name == name,
        devices.c.status != DeviceStatus.DELETED.value,
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else device_from_row(row)


async def list_devices_txn(
    conn: AsyncConnection,
    *,
    owner_id: str | None,
    statuses: Iterable[DeviceStatus] = LIVE,
    limit: int = 100,
    offset: int = 0,
) -> list[Device]:
    """Devices of one owner (or everyone's), oldest first."""
    stmt = select(devices).where(devices.c.status.in_([s.value for s in statuses]))
    if owner_id is not None:
        stmt = stmt.where(devices.c.owner_id == owner_id)
    stmt = stmt.order_by(devices.c.created_at, devices.c.id).limit(limit).offset(offset)
    return [device_from_row(row) for row in await conn.execute(stmt)]


async def update_device_txn(
    conn: AsyncConnection,
    device_id: str,
    *,
    expect: Iterable[DeviceStatus],
    now: datetime,
    **values: Any,
) -> bool:
    """Change a device if its status is one of ``expect``; True if it changed.

    ``values`` are column values; a ``status`` is given as a :class:`DeviceStatus`.
    """
    if "status" in values:
        values["status"] = DeviceStatus(values["status"]).value
    stmt = (
        update(devices)
        .where(devices.c.id == device_id, devices.c.status.in_([s.value for s in expect]))
        .values(updated_at=now, **values)
    )
    return bool((await conn.execute(stmt)).rowcount == 1)
