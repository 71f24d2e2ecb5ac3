"""The sandbox payment provider: a working provider in-process, with fault knobs.

It keeps a real ledger (``sandbox_charges``, ``sandbox_refunds``) in the application database,
in transactions of its own, never in the caller's: to billing it is an outside system. Keeping
the ledger in the database means the API process and every worker process see one provider,
and a worker killed mid-refund leaves the provider's side as it was — which is what crash tests
need. Like real Stripe it refuses to refund more than is left on a charge and, unless told to
ignore idempotency keys, answers a repeated refund key with the first refund.

The knobs (:class:`~cloudphone.billing.config.SandboxConfig`) simulate latency, unknown
outcomes before or after the money moved, refused connections and slow ("pending") refunds.
Replace :attr:`SandboxProvider.faults` at any time to change them.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.billing.config import SandboxConfig
from cloudphone.billing.models import sandbox_charges, sandbox_refunds
from cloudphone.billing.providers.base import (
    ChargeState,
    ProviderCharge,
    ProviderRefund,
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
    RefundState,
)
from cloudphone.saga import Database

DECLINING_METHODS = frozenset({"pm_card_chargeCustomerFail", "pm_card_visa_chargeDeclined"})
"""Payment methods the sandbox declines (the same test cards Stripe declines)."""


class SandboxProvider:
    """In-process provider whose ledger lives in ``db``.

    Args:
        db: Database holding the ledger tables (created with the billing schema).
        faults: Fault knobs; all off by default.
        rand: Uniform source in ``[0, 1)`` for the fault rates.
    """

    name = "sandbox"

    def __init__(
        self,
        db: Database,
        faults: SandboxConfig | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.faults = faults if faults is not None else SandboxConfig()
        self._rand = rand

    async def _network(self) -> None:
        """What every call goes through first: latency, refused connections, 503s."""
        faults = self.faults
        if faults.refuse_connections:
            raise ProviderRefused("sandbox: connection refused (nothing was sent)")
        if faults.latency:
            await asyncio.sleep(faults.latency.total_seconds())
        if faults.error_rate and self._rand() < faults.error_rate:
            raise ProviderUnknownOutcome("sandbox: 503 service unavailable")

    async def create_payment(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        description: str,
        payment_method: str | None,
    ) -> ProviderCharge:
        """Charge at once; the same ``payment_id`` returns the first charge."""
        await self._network()
        if payment_method in DECLINING_METHODS:
            raise ProviderRejected("sandbox: card_declined (your card was declined)")
        try:
            async with self.db.begin() as conn:
                existing = await _charge_by_key(conn, payment_id)
                if existing is None:
                    charge_id = f"sb_ch_{uuid.uuid4().hex}"
                    await conn.execute(
                        sa.insert(sandbox_charges).values(
                            id=charge_id,
                            payment_key=payment_id,
                            amount=amount,
                            currency=currency,
                            refunded=0,
                            created_at=_now(),
                        )
                    )
                    return ProviderCharge(charge_id, ChargeState.SUCCEEDED)
        except IntegrityError:
            async with self.db.read() as conn:
                existing = await _charge_by_key(conn, payment_id)
            if existing is None:
                raise
        return ProviderCharge(existing["id"], ChargeState.SUCCEEDED)

    async def find_payment(self, *, payment_id: str, since: datetime) -> ProviderCharge | None:
        """The charge made for ``payment_id``, if any (a declined payment leaves none)."""
        await self._network()
        async with self.db.read() as conn:
            row = await _charge_by_key(conn, payment_id)
        return None if row is None else ProviderCharge(row["id"], ChargeState.SUCCEEDED)

    async def create_refund(
        self, *, charge_id: str, refund_id: str, amount: int, currency: str
    ) -> ProviderRefund:
        """Refund part of a charge, or return the refund already made for ``refund_id``."""
        await self._network()
        faults = self.faults
        async with self.db.begin() as conn:
            charge = await _locked_charge(conn, charge_id, currency)
            if not faults.ignore_idempotency_key:
                existing = await _refund_by_key(conn, charge_id, refund_id)
                if existing is not None:
                    return _refund(existing)
            left = charge["amount"] - charge["refunded"]
            if amount > left:
                raise ProviderRejected(
                    f"sandbox: amount_too_large: refund of {amount} is greater than the "
                    f"unrefunded {left} on charge {charge_id}"
                )
            row = {
                "id": f"sb_re_{uuid.uuid4().hex}",
                "charge_id": charge_id,
                "refund_key": refund_id,
                "amount": amount,
                "currency": currency,
                "status": "pending" if faults.pending_polls else "succeeded",
                "polls_left": faults.pending_polls,
                "final_status": faults.pending_outcome,
                "created_at": _now(),
            }
            await conn.execute(sa.insert(sandbox_refunds).values(**row))
            await conn.execute(
                sa.update(sandbox_charges)
                .where(sandbox_charges.c.id == charge_id)
                .values(refunded=sandbox_charges.c.refunded + amount)
            )
        if faults.timeout_after_refund_rate and self._rand() < faults.timeout_after_refund_rate:
            raise ProviderUnknownOutcome("sandbox: read timed out (after the refund was taken)")
        return _refund(row)

    async def find_refund(self, *, charge_id: str, refund_id: str) -> ProviderRefund | None:
        """The first refund made on the charge for ``refund_id``, if any."""
        await self._network()
        async with self.db.read() as conn:
            row = await _refund_by_key(conn, charge_id, refund_id)
        return None if row is None else _refund(row)

    async def get_refund(self, refund_ref: str) -> ProviderRefund:
        """A refund by id; each check of a pending refund moves it one poll closer to final."""
        await self._network()
        async with self.db.begin() as conn:
            stmt = sa.select(sandbox_refunds).where(sandbox_refunds.c.id == refund_ref)
            row = (await conn.execute(stmt.with_for_update())).mappings().first()
            if row is None:
                raise ProviderRejected(f"sandbox: no such refund {refund_ref!r}")
            if row["status"] != "pending":
                return _refund(row)
            values = _advance(row)
            await conn.execute(
                sa.update(sandbox_refunds)
                .where(sandbox_refunds.c.id == refund_ref)
                .values(**values)
            )
            if values["status"] == "failed":
                await conn.execute(
                    sa.update(sandbox_charges)
                    .where(sandbox_charges.c.id == row["charge_id"])
                    .values(refunded=sandbox_charges.c.refunded - row["amount"])
                )
        return _refund({**row, **values})

    async def refunds_of(self, charge_id: str) -> list[ProviderRefund]:
        """Every refund on a charge (for tests and operators)."""
        async with self.db.read() as conn:
            stmt = (
                sa.select(sandbox_refunds)
                .where(sandbox_refunds.c.charge_id == charge_id)
                .order_by(sandbox_refunds.c.created_at, sandbox_refunds.c.id)
            )
            rows = (await conn.execute(stmt)).mappings().all()
        return [_refund(r) for r in rows]

    async def close(self) -> None:
        """Nothing to release: the ledger belongs to the shared database."""


def _now() -> datetime:
    return datetime.now(UTC)


def _advance(row: RowMapping) -> dict[str, Any]:
    polls_left = max(row["polls_left"] - 1, 0)
    status = row["final_status"] if polls_left == 0 else "pending"
    return {"polls_left": polls_left, "status": status}


async def _charge_by_key(conn: AsyncConnection, payment_key: str) -> RowMapping | None:
    stmt = sa.select(sandbox_charges).where(sandbox_charges.c.payment_key == payment_key)
    return (await conn.execute(stmt)).mappings().first()


async def _locked_charge(conn: AsyncConnection, charge_id: str, currency: str) -> RowMapping:
    stmt = sa.select(sandbox_charges).where(sandbox_charges.c.id == charge_id).with_for_update()
    charge = (await conn.execute(stmt)).mappings().first()
    if charge is None:
        raise ProviderRejected(f"sandbox: no such charge {charge_id!r}")
    if charge["currency"] != currency:
        raise ProviderRejected(
            f"sandbox: refund currency {currency} differs from the charge's {charge['currency']}"
        )
    return charge


async def _refund_by_key(
    conn: AsyncConnection, charge_id: str, refund_key: str
) -> RowMapping | None:
    stmt = (
        sa.select(sandbox_refunds)
        .where(sandbox_refunds.c.charge_id == charge_id, sandbox_refunds.c.refund_key == refund_key)
        .order_by(sandbox_refunds.c.created_at, sandbox_refunds.c.id)
        .limit(1)
    )
    return (await conn.execute(stmt)).mappings().first()


def _refund(row: Mapping[Any, Any]) -> ProviderRefund:
    state = RefundState(row["status"])
    reason = "sandbox: the refund failed at the bank" if state is RefundState.FAILED else None
    return ProviderRefund(row["id"], row["amount"], row["currency"], state, reason)
