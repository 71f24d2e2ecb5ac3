"""Billing tables and read models: orders, payments, refunds, and the sandbox provider's ledger.

Every amount is an integer in the currency's minor unit (see :mod:`cloudphone.billing.money`).
Invariants the database enforces as well as the code:

* ``0 <= payments.refunded_amount <= payments.amount`` — never more refunded than paid;
* at most one refund *in flight* (PENDING, PROCESSING or NEEDS_ATTENTION) per payment, through a
  partial unique index;
* at most one live (not FAILED) payment per order;
* one refund per (payment, client Idempotency-Key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from cloudphone.saga.store.tables import NAMING_CONVENTION
from cloudphone.saga.store.types import UtcDateTime


class OrderStatus(StrEnum):
    """Life of an order."""

    PENDING = "PENDING"
    """Created by ``create_order``; waiting to be paid."""
    PAID = "PAID"
    """A payment succeeded (``pay_order``); also where a failed refund leaves it."""
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    """UPDATE_ORDER_STATUS after a refund that left part of the payment."""
    REFUNDED = "REFUNDED"
    """UPDATE_ORDER_STATUS after the payment was refunded in full."""
    CANCELLED = "CANCELLED"
    """``cancel_order`` on a PENDING order; it can no longer be paid."""


class PaymentStatus(StrEnum):
    """Life of a payment."""

    PENDING = "PENDING"
    """Inserted before the provider is called; stays here if the provider's answer was lost
    (paying the order again retries this payment with the same idempotency key) until the
    periodic payment reconcile asks the provider and settles it (``reconcile_note`` says how)."""
    SUCCESS = "SUCCESS"
    """The provider captured the money (its answer, or the reconcile found the charge)."""
    REFUNDING = "REFUNDING"
    """SET_REFUNDING_STATUS: held by one refund (``held_by_refund``)."""
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    """UPDATE_PAYMENT_STATUS: some but not all of the amount was refunded."""
    REFUNDED = "REFUNDED"
    """UPDATE_PAYMENT_STATUS: ``refunded_amount == amount``."""
    FAILED = "FAILED"
    """The provider declined the payment, or the reconcile found no charge for it; nothing
    was captured (``failure_reason`` says which)."""


REFUNDABLE = (PaymentStatus.SUCCESS, PaymentStatus.PARTIALLY_REFUNDED)
"""Payment statuses a new refund may start from."""


class RefundStatus(StrEnum):
    """Life of a refund (one row per refund request)."""

    PENDING = "PENDING"
    """``request_refund`` inserted it and started its saga."""
    PROCESSING = "PROCESSING"
    """The provider accepted it and answered "pending"; the saga polls until it is final."""
    SUCCEEDED = "SUCCEEDED"
    """UPDATE_PAYMENT_STATUS: the money went back; the payment's refunded amount includes it."""
    FAILED = "FAILED"
    """Definitely no money moved: the provider rejected it, could not be reached before the
    request was sent, the saga was compensated, or the provider failed it later."""
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    """The provider's answer stayed unknown (or the refund exists while the saga failed): the
    saga is FAILED for an operator and the payment stays held. ``failure_reason`` says why."""


IN_FLIGHT = (RefundStatus.PENDING, RefundStatus.PROCESSING, RefundStatus.NEEDS_ATTENTION)
"""Refund statuses that hold the payment: a new refund waits until none is in flight."""


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Metadata of the billing tables (Alembic includes it)."""

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(500), nullable=False),
    Column("status", String(24), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint(_in("status", OrderStatus), name="status"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(36), ForeignKey("orders.id"), nullable=False, index=True),
    Column("user_id", String(200), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_payment_id", String(255)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(24), nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    # The refund holding the payment (REFUNDING) and the status to return to if it is undone.
    Column("held_by_refund", String(36)),
    Column("status_before_hold", String(24)),
    Column("failure_reason", String(1000)),
    # What the periodic reconcile of a PENDING payment asked the provider and concluded.
    Column("reconcile_note", String(1000)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refunded"),
    CheckConstraint(_in("status", PaymentStatus), name="status"),
    CheckConstraint(
        "(status = 'REFUNDING') = (held_by_refund IS NOT NULL)", name="hold_iff_refunding"
    ),
)
Index(
    "uq_payments_live_per_order",
    payments.c.order_id,
    unique=True,
    postgresql_where=payments.c.status != PaymentStatus.FAILED.value,
    sqlite_where=payments.c.status != PaymentStatus.FAILED.value,
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("payment_id", String(36), ForeignKey("payments.id"), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(500)),
    Column("status", String(24), nullable=False),
    Column("saga_id", String(36), nullable=False),
    Column("idempotency_key", String(255)),
    Column("provider_refund_id", String(255)),
    Column("failure_reason", String(1000)),
    # Pivot bookkeeping: requests sent to the provider, and whether the last one's outcome is
    # unknown (set before sending, cleared only by a definitive "no money moved").
    Column("provider_requests", Integer, nullable=False),
    Column("outcome_unknown", Boolean, nullable=False),
    Column("last_provider_error", String(1000)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint(_in("status", RefundStatus), name="status"),
    UniqueConstraint("payment_id", "idempotency_key"),
)
Index("ix_refunds_payment_id", refunds.c.payment_id)
Index(
    "uq_refunds_in_flight_per_payment",
    refunds.c.payment_id,
    unique=True,
    postgresql_where=refunds.c.status.in_([s.value for s in IN_FLIGHT]),
    sqlite_where=refunds.c.status.in_([s.value for s in IN_FLIGHT]),
)

for _table in (orders, payments, refunds):
    # The lists (GET /orders, /payments, /refunds): newest first, a user's own or everyone's.
    Index(f"ix_{_table.name}_user_id_created_at", _table.c.user_id, _table.c.created_at)
    Index(f"ix_{_table.name}_created_at", _table.c.created_at)

sandbox_charges = Table(
    "sandbox_charges",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("payment_key", String(255), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
"""The sandbox provider's charges (written only by ``providers/sandbox.py``)."""

sandbox_refunds = Table(
    "sandbox_refunds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("charge_id", String(64), ForeignKey("sandbox_charges.id"), nullable=False, index=True),
    Column("refund_key", String(255), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("polls_left", Integer, nullable=False),
    Column("final_status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
"""The sandbox provider's refunds; ``refund_key`` is the refund id sent as metadata (it is not
unique: a sandbox told to ignore idempotency keys behaves like localstripe)."""


@dataclass(frozen=True)
class Listing:
    """Which rows a list use case returns: whose, created when, which page (newest first)."""

    user_id: str | None = None
    """Only this user's. Users may name only themselves (None means their own); admins anyone
    (None means everyone's)."""
    created_after: datetime | None = None
    """Created at or after."""
    created_before: datetime | None = None
    """Created before."""
    limit: int = 50
    """At most this many rows (1-1000)."""
    offset: int = 0
    """Rows to skip."""


@dataclass(frozen=True)
class Order:
    """An order: what the user buys, for how much."""

    id: str
    user_id: str
    amount: int
    currency: str
    description: str
    status: OrderStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Order:
        """Build from an ``orders`` row."""
        return cls(**{**_pick(row, cls), "status": OrderStatus(row["status"])})


@dataclass(frozen=True)
class Payment:
    """A payment of an order at one provider."""

    id: str
    order_id: str
    user_id: str
    provider: str
    provider_payment_id: str | None
    amount: int
    currency: str
    status: PaymentStatus
    refunded_amount: int
    held_by_refund: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    reconcile_note: str | None = None
    """What the reconcile of this payment, left PENDING, found at the provider and did."""

    @property
    def refundable_amount(self) -> int:
        """What may still be refunded, ignoring refunds in flight."""
        return self.amount - self.refunded_amount

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Payment:
        """Build from a ``payments`` row."""
        return cls(**{**_pick(row, cls), "status": PaymentStatus(row["status"])})


@dataclass(frozen=True)
class Refund:
    """One refund of (part of) a payment."""

    id: str
    payment_id: str
    user_id: str
    amount: int
    currency: str
    reason: str | None
    status: RefundStatus
    saga_id: str
    provider_refund_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Refund:
        """Build from a ``refunds`` row."""
        return cls(**{**_pick(row, cls), "status": RefundStatus(row["status"])})


def _pick(row: Mapping[Any, Any], cls: Any) -> dict[str, Any]:
    return {f.name: row[f.name] for f in fields(cls)}


def row_values(item: Order | Refund) -> dict[str, object]:
    """The columns of ``item``'s row, by name (``from_row`` the other way)."""
    return {k: getattr(item, k) for k in item.__dataclass_fields__}
