"""Billing use cases: orders, payments, refunds. Plain async functions on a Principal.

Users act only on their own orders, payments and refunds; anyone else's are "not found" (an
admin sees all). Every use case validates before writing and writes in one transaction, so a
refused request leaves nothing behind.

Refunds: at most one refund is *in flight* per payment. A request while another refund of the
same payment is PENDING or PROCESSING is rejected with 409 ``refund_in_progress`` (the client
retries once it finished), or, while that refund is NEEDS_ATTENTION, with 409
``refund_needs_attention`` (it finishes only when an operator reconciles it) rather than
queued: a queue would
hide a stuck refund behind a growing backlog, and the refundable balance a client sees would be
a guess. The row lock on the payment serialises concurrent requests; a partial unique index
backs the rule in the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing import store
from cloudphone.billing.models import (
    REFUNDABLE,
    Listing,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    metadata,
    orders,
    payments,
    refunds,
)
from cloudphone.billing.money import check_amount, normalize_currency
from cloudphone.billing.payments import PaymentDesk
from cloudphone.billing.pending import PendingPayments, ReconciledPayment
from cloudphone.billing.providers.base import PaymentProvider
from cloudphone.billing.reconcile import Reconciler
from cloudphone.billing.refund import REFUND_SAGA, RefundInput
from cloudphone.domain import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    Principal,
)
from cloudphone.periodic import Periodic
from cloudphone.saga import Database, SagaEngine

T = TypeVar("T", Order, Payment, Refund)

MAX_REASON = 500
MAX_DESCRIPTION = 500
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class RefundRequested:
    """What ``request_refund`` did: the refund, its saga, and the payment as it stood."""

    saga_id: str
    refund: Refund
    payment: Payment
    created: bool
    """False when the Idempotency-Key found an earlier request (nothing new was written)."""


async def create_billing_schema(db: Database) -> None:
    """Create the billing tables if missing (tests and embedded use; production migrates)."""
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)


class BillingService:
    """The billing use cases.

    Args:
        engine: The saga engine (its database holds the billing tables).
        providers: Payment providers by name; ``pay_order`` picks one by name.
        default_provider: Provider used when a payment request names none.
        refund_saga: Name of the registered refund saga (tests use their own).
        reconcile_age: How long a payment stays PENDING before the reconcile asks about it.
        reconcile_interval: Time between reconcile rounds (:meth:`start_reconciling`).
    """

    def __init__(
        self,
        engine: SagaEngine,
        providers: Mapping[str, PaymentProvider],
        *,
        default_provider: str = "sandbox",
        refund_saga: str = REFUND_SAGA,
        reconcile_age: timedelta = timedelta(minutes=10),
        reconcile_interval: timedelta = timedelta(minutes=1),
    ) -> None:
        if default_provider not in providers:
            raise ValueError(
                f"default payment provider {default_provider!r} is not configured "
                f"(configured: {', '.join(sorted(providers)) or 'none'})"
            )
        self.engine = engine
        self.db = engine.db
        self.providers = dict(providers)
        self.refund_saga = refund_saga
        self._payments = PaymentDesk(self.db, self.providers, default_provider)
        self._reconciler = Reconciler(engine, self.providers)
        self._pending = PendingPayments(self.db, self.providers, age=reconcile_age)
        self._reconciling = Periodic(
            "billing-payment-reconcile", self.reconcile_payments, reconcile_interval
        )

    # -- orders -------------------------------------------------------------------------

    async def create_order(
        self, principal: Principal, *, amount: int, currency: str, description: str
    ) -> Order:
        """Create a PENDING order of ``amount`` minor units of ``currency``."""
        amount = check_amount(amount)
        currency = normalize_currency(currency)
        description = _text(description, "description", MAX_DESCRIPTION, required=True)
        now = store.utcnow()
        order = Order(
            id=str(uuid.uuid4()),
            user_id=principal.user_id,
            amount=amount,
            currency=currency,
            description=description,
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(orders).values(**_values(order)))
        return order

    async def get_order(self, principal: Principal, order_id: str) -> Order:
        """The order; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            return _visible(principal, await store.order_txn(conn, order_id), "order", order_id)

    async def cancel_order(self, principal: Principal, order_id: str) -> Order:
        """Cancel a PENDING order with no payment in progress."""
        async with self.db.begin() as conn:
            order = _visible(
                principal, await store.order_txn(conn, order_id, lock=True), "order", order_id
            )
            if order.status is not OrderStatus.PENDING:
                raise ConflictError(
                    f"order {order.id} is {order.status}; only a PENDING order can be cancelled",
                    code="order_not_cancellable",
                )
            if await store.live_payment_of_order_txn(conn, order.id) is not None:
                raise ConflictError(
                    f"order {order.id} has a payment in progress", code="payment_in_progress"
                )
            await store.update_txn(conn, orders, order.id, status=OrderStatus.CANCELLED)
            result = await store.order_txn(conn, order.id)
        assert result is not None
        return result

    async def list_orders(
        self, principal: Principal, listing: Listing, *, status: OrderStatus | None = None
    ) -> list[Order]:
        """Orders newest first: the caller's own, or anyone's for an admin.

        Raises:
            ForbiddenError: A user named someone else in ``listing.user_id``.
        """
        rows = await self._page(principal, orders, "orders", listing, status=status)
        return [Order.from_row(row) for row in rows]

    # -- payments -----------------------------------------------------------------------

    async def list_payments(
        self,
        principal: Principal,
        listing: Listing,
        *,
        status: PaymentStatus | None = None,
        order_id: str | None = None,
    ) -> list[Payment]:
        """Payments newest first, as :meth:`list_orders`; optionally of one order."""
        rows = await self._page(
            principal, payments, "payments", listing, status=status, order_id=order_id
        )
        return [Payment.from_row(row) for row in rows]

    async def pay_order(
        self,
        principal: Principal,
        order_id: str,
        *,
        provider: str | None = None,
        payment_method: str | None = None,
    ) -> Payment:
        """Pay a PENDING order at a provider (see :class:`~.payments.PaymentDesk`)."""
        async with self.db.read() as conn:
            _visible(principal, await store.order_txn(conn, order_id), "order", order_id)
        return await self._payments.pay(order_id, provider, payment_method)

    async def get_payment(self, principal: Principal, payment_id: str) -> Payment:
        """The payment; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            payment = await store.payment_txn(conn, payment_id)
        return _visible(principal, payment, "payment", payment_id)

    # -- refunds ------------------------------------------------------------------------

    async def get_refund(self, principal: Principal, refund_id: str) -> Refund:
        """The refund; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            refund = await store.refund_txn(conn, refund_id)
        return _visible(principal, refund, "refund", refund_id)

    async def list_all_refunds(
        self,
        principal: Principal,
        listing: Listing,
        *,
        status: RefundStatus | None = None,
        payment_id: str | None = None,
    ) -> list[Refund]:
        """Refunds newest first, as :meth:`list_orders`; optionally of one payment."""
        rows = await self._page(
            principal, refunds, "refunds", listing, status=status, payment_id=payment_id
        )
        return [Refund.from_row(row) for row in rows]

    async def _page(
        self, principal: Principal, table: sa.Table, kind: str, listing: Listing, **equal: Any
    ) -> Sequence[sa.RowMapping]:
        if not 1 <= listing.limit <= 1000:
            raise InvalidInputError("limit must be between 1 and 1000")
        user_id = listing.user_id
        if not principal.is_admin:
            if user_id not in (None, principal.user_id):
                raise ForbiddenError(f"you can only list your own {kind}")
            user_id = principal.user_id
        async with self.db.read() as conn:
            return await store.page_txn(
                conn,
                table,
                equal={"user_id": user_id, **equal},
                created_after=listing.created_after,
                created_before=listing.created_before,
                limit=listing.limit,
                offset=max(listing.offset, 0),
            )

    async def list_refunds(self, principal: Principal, payment_id: str) -> list[Refund]:
        """Every refund of one of the caller's payments, oldest first."""
        async with self.db.read() as conn:
            _visible(principal, await store.payment_txn(conn, payment_id), "payment", payment_id)
            return await store.refunds_of_payment_txn(conn, payment_id)

    async def request_refund(
        self,
        principal: Principal,
        payment_id: str,
        *,
        amount: int,
        reason: str | None = None,
        currency: str | None = None,
        idempotency_key: str | None = None,
    ) -> RefundRequested:
        """Refund ``amount`` of a payment: insert the refund and start its saga, atomically.

        Args:
            principal: The caller; must own the payment (or be an admin).
            payment_id: The payment to refund.
            amount: Minor units, > 0 and at most what is left to refund.
            reason: Free text kept with the refund.
            currency: If given, must be the payment's currency.
            idempotency_key: The same key on the same payment returns the first request.

        Raises:
            InvalidInputError: Bad amount, currency or reason; amount over the refundable balance.
            NotFoundError: No such payment, or not the caller's.
            ConflictError: Another refund is in flight, the payment cannot be refunded, or the
                key was used with different parameters.
        """
        amount = check_amount(amount)
        currency = normalize_currency(currency) if currency is not None else None
        reason = _text(reason, "reason", MAX_REASON) if reason is not None else None
        if idempotency_key is not None:
            idempotency_key = _text(idempotency_key, "Idempotency-Key", MAX_IDEMPOTENCY_KEY)
        try:
            async with self.db.begin() as conn:
                return await self._request_refund_txn(
                    conn, principal, payment_id, amount, reason, currency, idempotency_key
                )
        except IntegrityError:
            # Only a race the row lock cannot prevent gets here (e.g. the payment was created
            # in the same instant); the constraints kept the data right.
            raise ConflictError(
                f"another refund of payment {payment_id} was requested at the same time; try again",
                code="refund_in_progress",
            ) from None

    async def _request_refund_txn(
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
        payment = _visible(principal, payment, "payment", payment_id)
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

    async def reconcile_refund(self, principal: Principal, refund_id: str) -> Refund:
        """Operator: settle a refund whose saga FAILED, from what the provider says now."""
        return await self._reconciler.reconcile(principal, refund_id)

    # -- payment reconcile (worker processes) ---------------------------------------------

    async def reconcile_payments(self, now: datetime | None = None) -> list[ReconciledPayment]:
        """One round of the payment reconcile (see :mod:`cloudphone.billing.pending`).

        Args:
            now: The time the age is counted back from (default: the current time).
        """
        return await self._pending.reconcile(now)

    async def start_reconciling(self) -> None:
        """Platform start-up hook: reconcile now, then every ``reconcile_interval``."""
        self._reconciling.start()

    async def stop_reconciling(self) -> None:
        """Platform shut-down hook: stop the periodic payment reconcile."""
        await self._reconciling.stop()


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
        **_values(refund),
        "idempotency_key": key,
        "provider_requests": 0,
        "outcome_unknown": False,
    }


def _values(item: Order | Refund) -> dict[str, object]:
    return {k: getattr(item, k) for k in item.__dataclass_fields__}


def _visible(principal: Principal, item: T | None, kind: str, item_id: str) -> T:
    if item is None or not principal.can_see(item.user_id):
        raise NotFoundError(f"no {kind} {item_id}", code=f"{kind}_not_found")
    return item


def _text(value: str, what: str, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be text")
    value = value.strip()
    if required and not value:
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidInputError(f"{what} must be at most {limit} characters")
    return value
