"""Paying an order: one payment row, one provider call, one result.

1. In a transaction: lock the order (it must be PENDING); reuse its PENDING payment if an
   earlier attempt's answer was lost (touching it, so a reconcile round in progress leaves it
   to this attempt), else insert a PENDING payment.
2. Call the provider with the payment id as idempotency key (a repeat charges once).
3. In a transaction: SUCCESS and the order PAID; or FAILED with the reason when the provider
   declined or could not be reached (nothing was charged: the order can be paid again).

When the answer is unknown (timeout, 5xx) the payment stays PENDING and the caller gets 503:
paying the order again retries *the same payment* with the same idempotency key. If nobody
does, the periodic payment reconcile (:mod:`cloudphone.billing.pending`) settles it from what
the provider says; so it does for a payment whose process died between steps 2 and 3.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing import store
from cloudphone.billing.models import Order, OrderStatus, Payment, PaymentStatus, payments
from cloudphone.billing.providers.base import (
    ChargeState,
    PaymentProvider,
    ProviderCharge,
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
)
from cloudphone.billing.settlement import settle_payment_txn
from cloudphone.domain import ConflictError, InvalidInputError, UnavailableError
from cloudphone.saga import Database


class PaymentDesk:
    """Takes payments for orders (see the module docstring).

    Args:
        db: The billing database.
        providers: Payment providers by name.
        default_provider: Used when a request names none.
    """

    def __init__(
        self, db: Database, providers: Mapping[str, PaymentProvider], default_provider: str
    ) -> None:
        self.db = db
        self.providers = providers
        self.default_provider = default_provider

    def provider(self, name: str | None) -> PaymentProvider:
        """The provider called ``name`` (the default for None); InvalidInputError if unknown."""
        chosen = name or self.default_provider
        provider = self.providers.get(chosen)
        if provider is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise InvalidInputError(
                f"unknown or unconfigured payment provider {chosen!r} (available: {known})",
                code="unknown_provider",
            )
        return provider

    async def pay(self, order_id: str, provider_name: str | None, method: str | None) -> Payment:
        """Charge the order at the provider; returns the payment (SUCCESS or FAILED)."""
        provider = self.provider(provider_name)
        async with self.db.begin() as conn:
            order, payment = await self._open_payment_txn(conn, order_id, provider.name)
        try:
            charge = await provider.create_payment(
                payment_id=payment.id,
                amount=order.amount,
                currency=order.currency,
                description=order.description,
                payment_method=method,
            )
        except ProviderRejected as error:
            return await self._finish(payment, ProviderCharge("", ChargeState.FAILED, error.reason))
        except ProviderRefused as error:
            await self._finish(payment, ProviderCharge("", ChargeState.FAILED, error.reason))
            raise UnavailableError(f"payment provider unreachable: {error.reason}") from None
        except ProviderUnknownOutcome as error:
            raise UnavailableError(
                f"the payment's outcome is unknown ({error.reason}); pay the order again to "
                f"retry payment {payment.id} safely"
            ) from None
        return await self._finish(payment, charge)

    async def _open_payment_txn(
        self, conn: AsyncConnection, order_id: str, provider: str
    ) -> tuple[Order, Payment]:
        order = await store.order_txn(conn, order_id, lock=True)
        assert order is not None  # the caller checked visibility
        if order.status is not OrderStatus.PENDING:
            raise ConflictError(
                f"order {order.id} is {order.status}; only a PENDING order can be paid",
                code="order_not_payable",
            )
        live = await store.live_payment_of_order_txn(conn, order.id)
        if live is not None:
            if live.provider != provider:
                raise ConflictError(
                    f"payment {live.id} of this order at {live.provider} is still pending",
                    code="payment_in_progress",
                )
            await store.update_txn(conn, payments, live.id)  # a new attempt: see the docstring
            return order, live
        now = store.utcnow()
        payment = Payment(
            id=str(uuid.uuid4()),
            order_id=order.id,
            user_id=order.user_id,
            provider=provider,
            provider_payment_id=None,
            amount=order.amount,
            currency=order.currency,
            status=PaymentStatus.PENDING,
            refunded_amount=0,
            held_by_refund=None,
            failure_reason=None,
            created_at=now,
            updated_at=now,
        )
        values = {k: getattr(payment, k) for k in payment.__dataclass_fields__}
        await conn.execute(sa.insert(payments).values(**values))
        return order, payment

    async def _finish(self, payment: Payment, charge: ProviderCharge) -> Payment:
        # A payment no longer PENDING was recorded first by a concurrent attempt or a reconcile.
        async with self.db.begin() as conn:
            await settle_payment_txn(conn, payment.id, charge)
            done = await store.payment_txn(conn, payment.id)
        assert done is not None
        return done
