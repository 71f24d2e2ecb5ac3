"""Host ports of devices (ADB and screen stream), allocated from configured ranges.

A port is a row of ``device_ports`` whose primary key is the port number, so it is unique
across the platform. Allocation picks a random free port of the range and inserts it with
``ON CONFLICT DO NOTHING``: a concurrent creation that took the same port makes the insert a
no-op (it never aborts the transaction) and the next candidate is tried. Functions ending in
``_txn`` run inside the caller's transaction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.models import PortKind, device_ports
from cloudphone.domain import UnavailableError

CLAIM_TRIES = 32
"""Candidates tried per port before giving up on this attempt (lost races)."""


class NoFreePortError(UnavailableError):
    """Every port of a range is allocated (or too many races were lost); retry later."""

    code = "no_free_port"


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of host ports."""

    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class DevicePorts:
    """The ports of one device."""

    adb: int
    stream: int


def ranges_from(config: DevicesConfig) -> dict[PortKind, PortRange]:
    """The configured range of each kind of port."""
    return {
        PortKind.ADB: PortRange(config.adb_port_min, config.adb_port_max),
        PortKind.STREAM: PortRange(config.stream_port_min, config.stream_port_max),
    }


async def ports_of_saga_txn(conn: AsyncConnection, saga_id: str) -> dict[PortKind, int]:
    """The ports a creation saga holds, by kind."""
    rows = await conn.execute(
        select(device_ports.c.kind, device_ports.c.port).where(device_ports.c.saga_id == saga_id)
    )
    return {PortKind(kind): port for kind, port in rows}


async def allocate_txn(
    conn: AsyncConnection,
    *,
    saga_id: str,
    device_id: str,
    ranges: Mapping[PortKind, PortRange],
    now: datetime,
    rand: Callable[[int], int] | None = None,
) -> DevicePorts:
    """Allocate one port of each kind for a creation saga (idempotent per saga).

    Args:
        conn: The caller's transaction.
        saga_id: The ``device_create`` run the ports belong to until the device is deleted.
        device_id: The device they are for.
        ranges: Where to take each kind from.
        now: Allocation time.
        rand: ``rand(n)`` picks an index below ``n`` (random by default).

    Raises:
        NoFreePortError: A range has no free port left.
    """
    pick = rand or random.randrange
    held = await ports_of_saga_txn(conn, saga_id)
    for kind in PortKind:
        if kind not in held:
            held[kind] = await _claim(conn, kind, ranges[kind], saga_id, device_id, now, pick)
    return DevicePorts(adb=held[PortKind.ADB], stream=held[PortKind.STREAM])


async def _claim(
    conn: AsyncConnection,
    kind: PortKind,
    port_range: PortRange,
    saga_id: str,
    device_id: str,
    now: datetime,
    pick: Callable[[int], int],
) -> int:
    taken_stmt = select(device_ports.c.port).where(
        device_ports.c.port.between(port_range.low, port_range.high)
    )
    taken = set((await conn.execute(taken_stmt)).scalars())
    free = [p for p in range(port_range.low, port_range.high + 1) if p not in taken]
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for _ in range(CLAIM_TRIES):
        if not free:
            break
        # Swap-remove a random candidate: O(1), and concurrent allocators rarely collide.
        index = pick(len(free))
        free[index], free[-1] = free[-1], free[index]
        port = free.pop()
        stmt = (
            upsert(device_ports)
            .values(
                port=port, kind=kind.value, saga_id=saga_id, device_id=device_id, allocated_at=now
            )
            .on_conflict_do_nothing()
            .returning(device_ports.c.port)
        )
        if (await conn.execute(stmt)).first() is not None:
            return port
    raise NoFreePortError(f"no free {kind.value} port in {port_range}")


async def release_saga_ports_txn(conn: AsyncConnection, saga_id: str) -> int:
    """Free the ports a creation saga allocated; returns how many were freed."""
    result = await conn.execute(delete(device_ports).where(device_ports.c.saga_id == saga_id))
    return int(result.rowcount)


async def release_device_ports_txn(conn: AsyncConnection, device_id: str) -> int:
    """Free every port of a device; returns how many were freed."""
    result = await conn.execute(delete(device_ports).where(device_ports.c.device_id == device_id))
    return int(result.rowcount)
