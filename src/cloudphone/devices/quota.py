"""Per-user device quotas: limits, usage and one reservation row per ``device_create`` saga.

A reservation is made by ONE conditional UPDATE (``used + reserved + request <= limit`` for
devices, CPU, memory and storage, plus the per-device maxima), so concurrent creations can
never exceed a quota: on PostgreSQL the row lock serialises them and the condition is
re-checked against the committed row; SQLite has a single writer. Every function here ends in
``_txn``: it runs inside the caller's transaction and never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices.config import QuotaDefaults
from cloudphone.devices.models import ReservationStatus, device_quotas, quota_reservations
from cloudphone.devices.spec import (
    DeviceSpec,
    QuotaLimits,
    Resources,
    api_units,
    cores_to_millis,
)
from cloudphone.domain import ConflictError, QuotaExceededError

_DIMENSIONS = ("devices", "cpu_millis", "memory_mb", "storage_mb")


@dataclass(frozen=True)
class Quota:
    """A user's limits with what their devices use and what running creations reserved."""

    user_id: str
    limits: QuotaLimits
    used: Resources
    reserved: Resources

    @property
    def available(self) -> Resources:
        """What a new creation may still take (never negative)."""
        return Resources(
            *(
                max(
                    getattr(self.limits, f"max_{d}")
                    - getattr(self.used, d)
                    - getattr(self.reserved, d),
                    0,
                )
                for d in _DIMENSIONS
            )
        )

    def shortfall(self, spec: DeviceSpec) -> list[str]:
        """Why a device with ``spec`` does not fit (empty when it does), in the API's units."""
        asked = Resources.of(spec)
        reasons = []
        for d in _DIMENSIONS:
            limit = getattr(self.limits, f"max_{d}")
            used, reserved, want = (getattr(r, d) for r in (self.used, self.reserved, asked))
            if used + reserved + want > limit:
                name, *shown = api_units(d, used, reserved, want, limit)
                reasons.append(
                    "{}: {} used + {} reserved + {} requested > limit {}".format(name, *shown)
                )
        for d in ("cpu_millis", "memory_mb", "storage_mb"):
            limit, want = getattr(self.limits, f"device_max_{d}"), getattr(asked, d)
            if want > limit:
                name, wanted, most = api_units(d, want, limit)
                reasons.append(f"{name}: {wanted} requested > per-device maximum {most}")
        return reasons


def default_limits(defaults: QuotaDefaults) -> QuotaLimits:
    """The limits of a user without a quota row."""
    return QuotaLimits(
        max_devices=defaults.max_devices,
        max_cpu_millis=cores_to_millis(defaults.max_cpu_cores),
        max_memory_mb=defaults.max_memory_mb,
        max_storage_mb=defaults.max_storage_mb,
        device_max_cpu_millis=cores_to_millis(defaults.device_max_cpu_cores),
        device_max_memory_mb=defaults.device_max_memory_mb,
        device_max_storage_mb=defaults.device_max_storage_mb,
    )


def _quota_from_row(row: Row[Any]) -> Quota:
    m = row._mapping
    limits = QuotaLimits(**{f: m[f] for f in QuotaLimits.__dataclass_fields__})
    used = Resources(*(m[f"used_{d}"] for d in _DIMENSIONS))
    reserved = Resources(*(m[f"reserved_{d}"] for d in _DIMENSIONS))
    return Quota(m["user_id"], limits, used, reserved)


def _limit_values(limits: QuotaLimits) -> dict[str, int]:
    return {f: getattr(limits, f) for f in QuotaLimits.__dataclass_fields__}


def _zero_counters() -> dict[str, int]:
    return {f"{kind}_{d}": 0 for kind in ("used", "reserved") for d in _DIMENSIONS}


def _upsert(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


async def get_quota_txn(
    conn: AsyncConnection, user_id: str, defaults: QuotaDefaults, *, for_update: bool = False
) -> Quota:
    """The user's quota; the defaults with zero usage when the user has no row yet."""
    stmt = select(device_quotas).where(device_quotas.c.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    if row is None:
        return Quota(user_id, default_limits(defaults), Resources(), Resources())
    return _quota_from_row(row)


async def list_quotas_txn(conn: AsyncConnection, *, limit: int, offset: int) -> list[Quota]:
    """Every stored quota (users who ever reserved or were given limits), by user id."""
    stmt = select(device_quotas).order_by(device_quotas.c.user_id).limit(limit).offset(offset)
    return [_quota_from_row(row) for row in await conn.execute(stmt)]


async def ensure_quota_txn(
    conn: AsyncConnection, user_id: str, defaults: QuotaDefaults, now: datetime
) -> None:
    """Give the user a quota row with the default limits if they have none."""
    values = {
        "user_id": user_id,
        **_limit_values(default_limits(defaults)),
        **_zero_counters(),
        "updated_at": now,
    }
    await conn.execute(_upsert(conn)(device_quotas).values(values).on_conflict_do_nothing())


async def set_limits_txn(
    conn: AsyncConnection, user_id: str, limits: QuotaLimits, now: datetime
) -> None:
    """Set the user's limits, keeping usage and reservations.

    Limits may go below the current usage: existing devices stay, new creations are refused.
    """
    values = {**_limit_values(limits), "updated_at": now}
    stmt = (
        _upsert(conn)(device_quotas)
        .values({"user_id": user_id, **values, **_zero_counters()})
        .on_conflict_do_update(index_elements=["user_id"], set_=values)
    )
    await conn.execute(stmt)


async def reserve_txn(
    conn: AsyncConnection,
    *,
    saga_id: str,
    user_id: str,
    device_id: str,
    spec: DeviceSpec,
    defaults: QuotaDefaults,
    now: datetime,
) -> bool:
    """Reserve quota for one device creation; True if this call made the reservation.

    Idempotent per saga: a saga that already holds a reservation (made by the API in the
    request transaction, or by an earlier attempt) keeps it and nothing changes.

    Raises:
        QuotaExceededError: The device does not fit; the message says which limit.
        ConflictError: This saga's reservation was already given back.
    """
    existing = await _reservation_status(conn, saga_id)
    if existing is not None:
        if existing is not ReservationStatus.HELD and existing is not ReservationStatus.CONSUMED:
            raise ConflictError(f"the reservation of saga {saga_id} was already {existing}")
        return False
    await ensure_quota_txn(conn, user_id, defaults, now)
    asked = Resources.of(spec)
    if (await conn.execute(_reserve_statement(user_id, asked, now))).rowcount != 1:
        quota = await get_quota_txn(conn, user_id, defaults)
        reasons = quota.shortfall(spec) or ["the quota changed while reserving"]
        raise QuotaExceededError(f"quota exceeded for user {user_id}: {'; '.join(reasons)}")
    await conn.execute(
        insert(quota_reservations).values(
            saga_id=saga_id,
            user_id=user_id,
            device_id=device_id,
            cpu_millis=asked.cpu_millis,
            memory_mb=asked.memory_mb,
            storage_mb=asked.storage_mb,
            status=ReservationStatus.HELD.value,
            created_at=now,
            updated_at=now,
        )
    )
    return True


def _reserve_statement(user_id: str, asked: Resources, now: datetime) -> Any:
    """THE conditional UPDATE: add to ``reserved_*`` only if every limit still holds."""
    q = device_quotas.c
    return (
        update(device_quotas)
        .where(
            q.user_id == user_id,
            q.used_devices + q.reserved_devices + 1 <= q.max_devices,
            q.used_cpu_millis + q.reserved_cpu_millis + asked.cpu_millis <= q.max_cpu_millis,
            q.used_memory_mb + q.reserved_memory_mb + asked.memory_mb <= q.max_memory_mb,
            q.used_storage_mb + q.reserved_storage_mb + asked.storage_mb <= q.max_storage_mb,
            literal(asked.cpu_millis) <= q.device_max_cpu_millis,
            literal(asked.memory_mb) <= q.device_max_memory_mb,
            literal(asked.storage_mb) <= q.device_max_storage_mb,
        )
        .values({**_shift("reserved", asked, +1), "updated_at": now})
    )


def _shift(column: str, amount: Resources, sign: int) -> dict[str, Any]:
    q = device_quotas.c
    return {
        f"{column}_{d}": getattr(q, f"{column}_{d}") + sign * getattr(amount, d)
        for d in _DIMENSIONS
    }


async def _reservation_status(conn: AsyncConnection, saga_id: str) -> ReservationStatus | None:
    stmt = select(quota_reservations.c.status).where(quota_reservations.c.saga_id == saga_id)
    status = (await conn.execute(stmt)).scalar()
    return None if status is None else ReservationStatus(status)


async def _move(
    conn: AsyncConnection,
    saga_id: str,
    source: ReservationStatus,
    target: ReservationStatus,
    shifts: tuple[tuple[str, int], ...],
    now: datetime,
) -> bool:
    """Move one reservation from ``source`` to ``target`` and shift the quota counters.

    The status change is conditional, so only one caller ever shifts the counters for it.
    """
    r = quota_reservations.c
    row = (
        await conn.execute(
            select(r.user_id, r.cpu_millis, r.memory_mb, r.storage_mb).where(r.saga_id == saga_id)
        )
    ).first()
    if row is None:
        return False
    moved = await conn.execute(
        update(quota_reservations)
        .where(r.saga_id == saga_id, r.status == source.value)
        .values(status=target.value, updated_at=now)
    )
    if moved.rowcount != 1:
        return False
    amount = Resources(1, row.cpu_millis, row.memory_mb, row.storage_mb)
    values: dict[str, Any] = {"updated_at": now}
    for column, sign in shifts:
        values.update(_shift(column, amount, sign))
    await conn.execute(
        update(device_quotas).where(device_quotas.c.user_id == row.user_id).values(values)
    )
    return True


async def release_txn(conn: AsyncConnection, saga_id: str, now: datetime) -> bool:
    """Give back a HELD reservation (creation compensated); True if this call released it."""
    return await _move(
        conn, saga_id, ReservationStatus.HELD, ReservationStatus.RELEASED, (("reserved", -1),), now
    )


async def consume_txn(conn: AsyncConnection, saga_id: str, now: datetime) -> bool:
    """Turn a HELD reservation into usage (the device is RUNNING); True if this call did."""
    return await _move(
        conn,
        saga_id,
        ReservationStatus.HELD,
        ReservationStatus.CONSUMED,
        (("reserved", -1), ("used", +1)),
        now,
    )


async def return_txn(conn: AsyncConnection, saga_id: str, now: datetime) -> bool:
    """Give back the usage of a deleted device; True if this call returned it."""
    return await _move(
        conn, saga_id, ReservationStatus.CONSUMED, ReservationStatus.RETURNED, (("used", -1),), now
    )
