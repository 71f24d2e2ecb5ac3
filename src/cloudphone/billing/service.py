"""Billing use cases: orders, payments, refunds. Plain async functions on a Principal.

Users act only on their own orders, payments and refunds; anyone else's are "not found" (an
admin sees all). Every use case validates before writing and writes in one transaction, so a
refused request leaves nothing behind.

Refunds: at most one refund is *in flight* per payment; a request while another is in flight
is a 409, not queued (see :mod:`cloudphone.billing.refund_requests`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from cloudphone.billing import store
from cloudphone.billing.checks import checked_text, visible
from cloudphone.billing.models import (
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
    row_values,
)
from cloudphone.billing.money import check_amount, normalize_currency
from cloudphone.billing.payments import PaymentDesk
from cloudphone.billing.pending import PendingPayments, ReconciledPayment
from cloudphone.billing.providers.base import PaymentProvider
from cloudphone.billing.reconcile import Reconciler
from cloudphone.billing.refund import REFUND_SAGA
from cloudphone.billing.refund_requests import RefundDesk, RefundRequested
from cloudphone.domain import ConflictError, ForbiddenError, InvalidInputError, Principal
from cloudphone.periodic import Periodic
from cloudphone.saga import Database, SagaEngine

__all__ = ["BillingService", "RefundRequested", "create_billing_schema"]

MAX_DESCRIPTION = 500


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
        self._refunds = RefundDesk(engine, refund_saga)
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
        description = checked_text(description, "description", MAX_DESCRIPTION, required=True)
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
            await conn.execute(sa.insert(orders).values(**row_values(order)))
        return order

    async def get_order(self, principal: Principal, order_id: str) -> Order:
        """The order; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            return visible(principal, await store.order_txn(conn, order_id), "order", order_id)

    async def cancel_order(self, principal: Principal, order_id: str) -> Order:
        """Cancel a PENDING order with no payment in progress."""
        async with self.db.begin() as conn:
            order = visible(
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
            visible(principal, await store.order_txn(conn, order_id), "order", order_id)
        return await self._payments.pay(order_id, provider, payment_method)

    async def get_payment(self, principal: Principal, payment_id: str) -> Payment:
        """The payment; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            payment = await store.payment_txn(conn, payment_id)
        return visible(principal, payment, "payment", payment_id)

    # -- refunds ------------------------------------------------------------------------

    async def get_refund(self, principal: Principal, refund_id: str) -> Refund:
        """The refund; NotFoundError if it does not exist or is someone else's."""
        async with self.db.read() as conn:
            refund = await store.refund_txn(conn, refund_id)
        return visible(principal, refund, "refund", refund_id)

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
            visible(principal, await store.payment_txn(conn, payment_id), "payment", payment_id)
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
        return await self._refunds.request(
            principal,
            payment_id,
            amount=amount,
            reason=reason,
            currency=currency,
            idempotency_key=idempotency_key,
        )

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
