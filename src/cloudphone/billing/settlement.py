"""Recording a payment's or a refund's final outcome on the payment and the order.

:func:`settle_payment_txn` is used by ``pay_order`` and by the periodic payment reconcile;
:func:`settle_refund_txn` by the refund saga's UPDATE_PAYMENT_STATUS / UPDATE_ORDER_STATUS steps
and by the operator's :func:`~cloudphone.billing.service.BillingService.reconcile_refund`. So
each outcome is recorded the same way whoever learnt it. Functions run in the caller's
transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing import store
from cloudphone.billing.models import (
    OrderStatus,
    PaymentStatus,
    RefundStatus,
    orders,
    payments,
    refunds,
)
from cloudphone.billing.providers.base import ChargeState, ProviderCharge
from cloudphone.saga import NonRetryableError

__all__ = [
    "ORDER_FOR_PAYMENT",
    "SettlementConflict",
    "order_follows_payment_txn",
    "release_hold_txn",
    "settle_payment_txn",
    "settle_refund_txn",
]

ORDER_FOR_PAYMENT = {
    PaymentStatus.SUCCESS: OrderStatus.PAID,
    PaymentStatus.PARTIALLY_REFUNDED: OrderStatus.PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: OrderStatus.REFUNDED,
}
"""The order status that mirrors a settled payment status."""


class SettlementConflict(NonRetryableError):
    """The rows contradict the outcome being recorded; an operator must look."""


async def settle_payment_txn(
    conn: AsyncConnection,
    payment_id: str,
    charge: ProviderCharge,
    *,
    note: str | None = None,
    claimed_at: datetime | None = None,
) -> bool:
    """Record the provider's final answer on a PENDING payment; True if it changed.

    A succeeded charge makes it SUCCESS (with the provider's id) and its order PAID; a failed
    one makes it FAILED with the reason (the order stays payable). A payment that is no longer
    PENDING is left alone (another attempt recorded it first); so is one whose ``updated_at``
    is no longer ``claimed_at`` — a reconcile's claim, overtaken by the customer paying again.
    ``note`` goes to ``reconcile_note``.
    """
    if charge.state is ChargeState.PENDING:
        raise ValueError("a pending charge is not an outcome to record")
    current = await store.payment_txn(conn, payment_id, lock=True)
    if current is None or current.status is not PaymentStatus.PENDING:
        return False
    if claimed_at is not None and current.updated_at != claimed_at:
        return False
    values: dict[str, Any] = {"provider_payment_id": charge.id or None}
    if note is not None:
        values["reconcile_note"] = note
    if charge.state is ChargeState.SUCCEEDED:
        await store.update_txn(conn, payments, payment_id, status=PaymentStatus.SUCCESS, **values)
        await store.update_txn(conn, orders, current.order_id, status=OrderStatus.PAID)
    else:
        await store.update_txn(
            conn,
            payments,
            payment_id,
            status=PaymentStatus.FAILED,
            failure_reason=charge.failure_reason,
            **values,
        )
    return True


async def settle_refund_txn(
    conn: AsyncConnection,
    refund_id: str,
    *,
    provider_refund_id: str | None,
    succeeded: bool,
    failure_reason: str | None = None,
) -> dict[str, Any] | None:
    """Record the provider's final answer: refunded total and status, hold released.

    Succeeded: ``refunded_amount`` grows by the refund's amount; the payment is REFUNDED when
    nothing is left, else PARTIALLY_REFUNDED; the refund is SUCCEEDED. Failed at the provider
    (no money moved): the payment goes back to its status before the hold; the refund FAILED.
    Already settled refunds are left alone.

    Raises:
        SettlementConflict: The payment is not held by this refund, or the total would exceed
            the paid amount.
    """
    found = await store.refund_txn(conn, refund_id)
    if found is None:
        raise SettlementConflict(f"refund {refund_id} does not exist")
    # Lock order everywhere in billing: the payment first, then its refund.
    payment = await store.payment_txn(conn, found.payment_id, lock=True)
    refund = await store.refund_txn(conn, refund_id, lock=True)
    assert payment is not None  # foreign key
    assert refund is not None  # refunds are never deleted
    if refund.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):
        return None
    if payment.held_by_refund != refund.id:
        raise SettlementConflict(
            f"payment {payment.id} is not held by refund {refund.id} "
            f"(held by {payment.held_by_refund}); an operator must reconcile it"
        )
    if not succeeded:
        await release_hold_txn(conn, payment.id, refund.id, None)
        reason = failure_reason or "the provider failed the refund"
        await store.update_txn(
            conn,
            refunds,
            refund.id,
            status=RefundStatus.FAILED,
            failure_reason=reason,
            provider_refund_id=provider_refund_id,
        )
        return {"refund_outcome": "failed"}
    total = payment.refunded_amount + refund.amount
    if total > payment.amount:
        raise SettlementConflict(
            f"refund {refund.id} of {refund.amount} would refund {total}, more than the "
            f"{payment.amount} paid on payment {payment.id}"
        )
    status = PaymentStatus.REFUNDED if total == payment.amount else PaymentStatus.PARTIALLY_REFUNDED
    await release_hold_txn(
        conn, payment.id, refund.id, {"status": status, "refunded_amount": total}
    )
    await store.update_txn(
        conn,
        refunds,
        refund.id,
        status=RefundStatus.SUCCEEDED,
        provider_refund_id=provider_refund_id,
        failure_reason=None,
    )
    return {"refund_outcome": "succeeded"}


async def release_hold_txn(
    conn: AsyncConnection, payment_id: str, refund_id: str, values: dict[str, Any] | None
) -> None:
    """Release this refund's hold; with no values the payment returns to its earlier status."""
    new = values or {"status": payments.c.status_before_hold}
    await conn.execute(
        sa.update(payments)
        .where(payments.c.id == payment_id, payments.c.held_by_refund == refund_id)
        .values(**new, held_by_refund=None, status_before_hold=None, updated_at=store.utcnow())
    )


async def order_follows_payment_txn(conn: AsyncConnection, payment_id: str) -> None:
    """Set the order's status from its payment's (a held payment leaves it unchanged)."""
    payment = await store.payment_txn(conn, payment_id)
    if payment is None:
        raise NonRetryableError(f"payment {payment_id} does not exist")
    target = ORDER_FOR_PAYMENT.get(payment.status)
    order = await store.order_txn(conn, payment.order_id, lock=True)
    if target is None or order is None or order.status is target:
        return
    await store.update_txn(conn, orders, order.id, status=target)
