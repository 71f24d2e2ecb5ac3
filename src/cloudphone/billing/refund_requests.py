"""Requesting a refund: insert the refund and start its ``payment_refund`` saga, atomically.

At most one refund is *in flight* per payment. A request while another refund of the same
payment is PENDING or PROCESSING is rejected with 409 ``refund_in_progress`` (the client retries
once it finished), or, while that refund is NEEDS_ATTENTION, with 409 ``refund_needs_attention``
(it finishes only when an operator reconciles it) rather than queued: a queue would hide a stuck
refund behind a growing backlog, and the refundable balance a client sees would be a guess. The
row lock on the payment serialises concurrent requests; a partial unique index backs the rule in
the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing import store
from cloudphone.billing.checks import checked_text, visible
from cloudphone.billing.models import (
    REFUNDABLE,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    refunds,
    row_values,
)
from cloudphone.billing.money import check_amount, normalize_currency
from cloudphone.billing.refund import RefundInput
from cloudphone.domain import ConflictError, InvalidInputError, Principal
from cloudphone.saga import SagaEngine

MAX_REASON = 500
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class RefundRequested:
    """What ``request_refund`` did: the refund, its saga, and the payment as it stood."""

    saga_id: str
    refund: Refund
    payment: Payment
    created: bool
    """False when the Idempotency-Key found an earlier request (nothing new was written)."""


class RefundDesk:
    """Takes refund requests (see the module docstring).

    Args:
        engine: The saga engine (its database holds the billing tables).
        refund_saga: Name of the registered refund saga.
    """

    def __init__(self, engine: SagaEngine, refund_saga: str) -> None:
        self.engine = engine
        self.db = engine.db
        self.refund_saga = refund_saga

    async def request(
        self,
        principal: Principal,
        payment_id: str,
        *,
        amount: int,
        reason: str | None,
        currency: str | None,
        idempotency_key: str | None,
    ) -> RefundRequested:
        """Validate, then refund (see ``BillingService.request_refund``)."""
        amount = check_amount(amount)
        currency = normalize_currency(currency) if currency is not None else None
        reason = checked_text(reason, "reason", MAX_REASON) if reason is not None else None
        if idempotency_key is not None:
            idempotency_key = checked_text(idempotency_key, "Idempotency-Key", MAX_IDEMPOTENCY_KEY)
        try:
            async with self.db.begin() as conn:
                return await self._request_txn(
                    conn, principal, payment_id, amount, reason, currency, idempotency_key
                )
        except IntegrityError:
            # Only a race the row lock cannot prevent gets here (e.g. the payment was created
            # in the same instant); the constraints kept the data right.
            raise ConflictError(
                f"another refund of payment {payment_id} was requested at the same time; try again",
                code="refund_in_progress",
            ) from None

    async def _request_txn(
        self,
        conn: AsyncConnection,
        principal: Principal,
        payment_id: str,
        amount: int,
        reason: str | None,
        currency: str | None,
        key: str | None,
    ) -> RefundRequested:
        payment = await store.payment_txn(conn, payment_id, lock=True)
        payment = visible(principal, payment, "payment", payment_id)
        if key is not None:
            earlier = await store.refund_by_key_txn(conn, payment.id, key)
            if earlier is not None:
                _same_request(earlier, amount, currency)
                return RefundRequested(earlier.saga_id, earlier, payment, created=False)
        if currency is not None and currency != payment.currency:
            raise InvalidInputError(
                f"refund currency {currency} differs from the payment's {payment.currency}",
                code="currency_mismatch",
            )
        await _check_refundable(conn, payment, amount)
        refund_id = str(uuid.uuid4())
        saga_id = await self.engine.start(
            self.refund_saga,
            RefundInput(refund_id=refund_id, payment_id=payment.id, order_id=payment.order_id),
            idempotency_key=f"refund:{refund_id}",
            session=conn,
            started_by=principal.user_id,
        )
        refund = _new_refund(refund_id, payment, amount, reason, saga_id)
        await conn.execute(sa.insert(refunds).values(**_refund_values(refund, key)))
        return RefundRequested(saga_id, refund, payment, created=True)


async def _check_refundable(conn: AsyncConnection, payment: Payment, amount: int) -> None:
    in_flight = await store.refunds_in_flight_txn(conn, payment.id)
    stuck = next((r for r in in_flight if r.status is RefundStatus.NEEDS_ATTENTION), None)
    if stuck is not None:
        raise ConflictError(
            f"refund {stuck.id} of payment {payment.id} needs attention (its outcome is "
            "unknown): an operator must reconcile it before another refund can start",
            code="refund_needs_attention",
        )
    if in_flight or payment.status is PaymentStatus.REFUNDING:
        busy = in_flight[0].id if in_flight else payment.held_by_refund
        raise ConflictError(
            f"refund {busy} of payment {payment.id} is still in progress; one refund at a time, "
            "try again when it has finished",
            code="refund_in_progress",
        )
    if payment.status not in REFUNDABLE:
        raise ConflictError(
            f"payment {payment.id} is {payment.status}; only SUCCESS or PARTIALLY_REFUNDED "
            "payments can be refunded",
            code="payment_not_refundable",
        )
    left = payment.amount - payment.refunded_amount - sum(r.amount for r in in_flight)
    if amount > left:
        raise InvalidInputError(
            f"refund of {amount} exceeds the refundable balance of {left} {payment.currency} "
            f"(paid {payment.amount}, refunded {payment.refunded_amount})",
            code="amount_exceeds_refundable",
        )


def _same_request(earlier: Refund, amount: int, currency: str | None) -> None:
    if earlier.amount != amount or currency not in (None, earlier.currency):
        raise ConflictError(
            "this Idempotency-Key was already used for a different refund request "
            f"(amount {earlier.amount} {earlier.currency})",
            code="idempotency_key_reused",
        )


def _new_refund(
    refund_id: str, payment: Payment, amount: int, reason: str | None, saga_id: str
) -> Refund:
    now = store.utcnow()
    return Refund(
        id=refund_id,
        payment_id=payment.id,
        user_id=payment.user_id,
        amount=amount,
        currency=payment.currency,
        reason=reason,
        status=RefundStatus.PENDING,
        saga_id=saga_id,
        provider_refund_id=None,
        failure_reason=None,
        created_at=now,
        updated_at=now,
    )


def _refund_values(refund: Refund, key: str | None) -> dict[str, object]:
    return {
        **row_values(refund),
        "idempotency_key": key,
        "provider_requests": 0,
        "outcome_unknown": False,
    }
