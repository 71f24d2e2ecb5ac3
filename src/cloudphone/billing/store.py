"""Row access shared by the use cases and the refund saga.

Every function here runs inside the caller's transaction (names end in ``_txn`` and take the
connection); none commits. ``lock=True`` takes a row lock (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite has a single writer anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing.models import (
    IN_FLIGHT,
    Order,
    Payment,
    Refund,
    orders,
    payments,
    refunds,
)


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


async def _one(conn: AsyncConnection, table: sa.Table, row_id: str, lock: bool) -> Any:
    stmt = sa.select(table).where(table.c.id == row_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).mappings().first()


async def order_txn(conn: AsyncConnection, order_id: str, *, lock: bool = False) -> Order | None:
    """The order, or None."""
    row = await _one(conn, orders, order_id, lock)
    return None if row is None else Order.from_row(row)


async def payment_txn(
    conn: AsyncConnection, payment_id: str, *, lock: bool = False
) -> Payment | None:
    """The payment, or None."""
    row = await _one(conn, payments, payment_id, lock)
    return None if row is None else Payment.from_row(row)


async def refund_txn(conn: AsyncConnection, refund_id: str, *, lock: bool = False) -> Refund | None:
    """The refund, or None."""
    row = await _one(conn, refunds, refund_id, lock)
    return None if row is None else Refund.from_row(row)


async def refund_row_txn(conn: AsyncConnection, refund_id: str) -> Any:
    """The raw refund row, pivot bookkeeping included (``outcome_unknown``, …), or None."""
    return await _one(conn, refunds, refund_id, False)


async def refund_by_key_txn(
    conn: AsyncConnection, payment_id: str, idempotency_key: str
) -> Refund | None:
    """The refund a client created with this Idempotency-Key on this payment, or None."""
    stmt = sa.select(refunds).where(
        refunds.c.payment_id == payment_id, refunds.c.idempotency_key == idempotency_key
    )
    row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else Refund.from_row(row)


async def refunds_in_flight_txn(conn: AsyncConnection, payment_id: str) -> list[Refund]:
    """Refunds of the payment that still hold it (PENDING, PROCESSING, NEEDS_ATTENTION)."""
    stmt = sa.select(refunds).where(
        refunds.c.payment_id == payment_id,
        refunds.c.status.in_([s.value for s in IN_FLIGHT]),
    )
    return [Refund.from_row(r) for r in (await conn.execute(stmt)).mappings()]


async def refunds_of_payment_txn(conn: AsyncConnection, payment_id: str) -> list[Refund]:
    """Every refund of the payment, oldest first."""
    stmt = (
        sa.select(refunds)
        .where(refunds.c.payment_id == payment_id)
        .order_by(refunds.c.created_at, refunds.c.id)
    )
    return [Refund.from_row(r) for r in (await conn.execute(stmt)).mappings()]


async def live_payment_of_order_txn(conn: AsyncConnection, order_id: str) -> Payment | None:
    """The order's payment that is not FAILED, if any (there is at most one)."""
    stmt = sa.select(payments).where(payments.c.order_id == order_id, payments.c.status != "FAILED")
    row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else Payment.from_row(row)


async def page_txn(
    conn: AsyncConnection,
    table: sa.Table,
    *,
    equal: dict[str, object | None],
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    offset: int,
) -> Sequence[sa.RowMapping]:
    """Rows whose columns equal ``equal``'s non-None values, created in the window, newest first."""
    c = table.c
    conditions = [c[name] == value for name, value in equal.items() if value is not None]
    if created_after is not None:
        conditions.append(c.created_at >= created_after)
    if created_before is not None:
        conditions.append(c.created_at < created_before)
    stmt = (
        sa.select(table)
        .where(*conditions)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return (await conn.execute(stmt)).mappings().all()


async def update_txn(conn: AsyncConnection, table: sa.Table, row_id: str, **values: Any) -> None:
    """Set columns of one row (``updated_at`` too)."""
    await conn.execute(
        sa.update(table).where(table.c.id == row_id).values(**values, updated_at=utcnow())
    )
