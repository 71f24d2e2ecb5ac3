"""The payment reconcile: settle payments left PENDING by asking their provider.

A payment stays PENDING when the provider's answer never got recorded: the process died
between the charge and its record, or the answer was lost (a timeout, a 5xx). Worker processes
run :meth:`PendingPayments.reconcile` every ``billing.payment_reconcile_interval``. A round
takes the PENDING payments nobody touched for ``billing.payment_reconcile_age`` and, for each:

1. **claims** it — a conditional UPDATE that touches ``updated_at`` only if the payment is
   still PENDING and untouched since the cutoff. Of several workers running rounds at once,
   exactly one wins each payment; the others skip it;
2. **asks** its provider for the charge made with the payment id
   (:meth:`~cloudphone.billing.providers.base.PaymentProvider.find_payment`);
3. **records** the answer, unless someone touched the payment after the claim (the customer
   paying the order again: that attempt records its own answer):

   * a succeeded charge → SUCCESS with the provider's id, the order PAID;
   * a declined charge → FAILED with the provider's reason;
   * no charge at all → FAILED, ``no charge found`` (nothing was captured; the order can be
     paid again);
   * a charge not final yet, or no answer from the provider → still PENDING; asked again one
     age later.

``reconcile_note`` on the payment (shown by ``GET /payments/{id}``) says when the provider was
asked, what it answered and what was concluded. The age must exceed the longest a provider
call can take (the billing settings check it against the Stripe timeouts), so no request is
still on its way when "no charge" is concluded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from cloudphone.billing import store
from cloudphone.billing.models import Payment, PaymentStatus, payments
from cloudphone.billing.providers.base import (
    ChargeState,
    PaymentProvider,
    ProviderCharge,
    ProviderError,
)
from cloudphone.billing.settlement import settle_payment_txn
from cloudphone.saga import Database

log = logging.getLogger("cloudphone.billing")

NO_CHARGE = "no charge found"
"""Start of the failure reason of a payment the provider has no charge for."""


@dataclass(frozen=True)
class ReconciledPayment:
    """What a round did with one payment it claimed."""

    payment_id: str
    status: PaymentStatus
    """SUCCESS or FAILED when settled; PENDING when the provider could not tell yet."""
    note: str
    """The ``reconcile_note`` written on the payment."""


class PendingPayments:
    """Settles stale PENDING payments from their providers' answers (see the module docstring).

    Args:
        db: The billing database.
        providers: Payment providers by name (a payment names the one it was sent to).
        age: How long a PENDING payment must have been left untouched before a round asks.
        batch: Most payments one round claims (the oldest first).
    """

    def __init__(
        self,
        db: Database,
        providers: Mapping[str, PaymentProvider],
        *,
        age: timedelta,
        batch: int = 100,
    ) -> None:
        self.db = db
        self.providers = providers
        self.age = age
        self.batch = batch

    async def reconcile(self, now: datetime | None = None) -> list[ReconciledPayment]:
        """One round: claim, ask about and settle every stale PENDING payment."""
        now = now or store.utcnow()
        cutoff = now - self.age
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(payments)
                .where(payments.c.status == PaymentStatus.PENDING, payments.c.updated_at < cutoff)
                .order_by(payments.c.updated_at)
                .limit(self.batch)
            )
            stale = [Payment.from_row(row) for row in rows.mappings()]
        done = []
        for payment in stale:
            if await self._claim(payment.id, cutoff, now):
                done.append(await self._settle(payment, now))
        if done:
            log.warning(
                "reconciled pending payments",
                extra={"payments": {d.payment_id: d.status.value for d in done}},
            )
        return done

    async def _claim(self, payment_id: str, cutoff: datetime, claimed_at: datetime) -> bool:
        """Set ``updated_at`` to ``claimed_at`` if still PENDING and stale; True if this won.

        Whoever touches the payment afterwards writes another ``updated_at``: recording the
        round's answer requires this exact value, which no clock skew between processes fools.
        """
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                sa.update(payments)
                .where(
                    payments.c.id == payment_id,
                    payments.c.status == PaymentStatus.PENDING,
                    payments.c.updated_at < cutoff,
                )
                .values(updated_at=claimed_at)
            )
        return bool(claimed.rowcount == 1)

    async def _settle(self, payment: Payment, claimed_at: datetime) -> ReconciledPayment:
        asked = f"reconcile {claimed_at:%Y-%m-%d %H:%M:%S} UTC, asked {payment.provider}"
        provider = self.providers.get(payment.provider)
        if provider is None:
            return await self._keep(payment, claimed_at, f"{asked}: provider not configured")
        try:
            charge = await provider.find_payment(payment_id=payment.id, since=payment.created_at)
        except ProviderError as error:
            return await self._keep(payment, claimed_at, f"{asked}: no answer ({error.reason})")
        if charge is None:
            reason = (
                f"{NO_CHARGE}: {payment.provider} has no charge for this payment "
                f"{self.age.total_seconds():g} s after its last attempt; nothing was captured"
            )
            charge = ProviderCharge("", ChargeState.FAILED, reason)
            note = f"{asked}: no charge found; FAILED"
        elif charge.state is ChargeState.PENDING:
            return await self._keep(payment, claimed_at, f"{asked}: charge {charge.id} not final")
        else:
            note = f"{asked}: charge {charge.id} {charge.state.value}; " + (
                "SUCCESS" if charge.state is ChargeState.SUCCEEDED else "FAILED"
            )
        async with self.db.begin() as conn:
            settled = await settle_payment_txn(
                conn, payment.id, charge, note=note, claimed_at=claimed_at
            )
            current = await store.payment_txn(conn, payment.id)
        assert current is not None
        if not settled:
            note = f"{asked}: overtaken by another attempt, which recorded {current.status}"
        return ReconciledPayment(payment.id, current.status, note)

    async def _keep(self, payment: Payment, claimed_at: datetime, note: str) -> ReconciledPayment:
        """Leave it PENDING with the note (only if nobody touched it since the claim)."""
        note += "; still PENDING"
        async with self.db.begin() as conn:
            await conn.execute(
                sa.update(payments)
                .where(
                    payments.c.id == payment.id,
                    payments.c.status == PaymentStatus.PENDING,
                    payments.c.updated_at == claimed_at,
                )
                .values(reconcile_note=note)
            )
        return ReconciledPayment(payment.id, PaymentStatus.PENDING, note)
