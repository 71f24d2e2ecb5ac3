"""The payment-provider port: what billing needs from a provider, and how calls fail.

A failed call is one of three things, and the refund saga treats them differently:

* :class:`ProviderRejected` — the provider answered and refused (validation, declined card,
  over-refund). Definitely no money moved; the saga may compensate.
* :class:`ProviderRefused` — the connection was refused before the request was sent, or the
  provider turned the request away unprocessed (rate limited: HTTP 429). Definitely no money
  moved; worth retrying later.
* :class:`ProviderUnknownOutcome` — a timeout, a connection lost after sending, a 5xx, an answer
  the provider marks as worth retrying. The request may have been carried out; only asking the
  provider about it can settle that.

Adapters map every error they can meet onto one of these; anything else they let escape is
treated as an unknown outcome by the saga.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class ProviderError(Exception):
    """A provider call failed; ``reason`` is safe to show (no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderRejected(ProviderError):
    """The provider answered and refused the request: nothing was done."""


class ProviderRefused(ProviderError):
    """Refused before anything was done (connection refused, rate limited): retry later."""


class ProviderUnknownOutcome(ProviderError):
    """No usable answer after the request may have reached the provider."""


class ChargeState(StrEnum):
    """Outcome of a payment at the provider."""

    SUCCEEDED = "succeeded"
    """The money was captured."""
    FAILED = "failed"
    """The payment was declined; nothing was captured."""
    PENDING = "pending"
    """Found by :meth:`PaymentProvider.find_payment` but not final yet (Stripe
    ``processing``, ``requires_action``); ask again later."""


class RefundState(StrEnum):
    """State of a refund at the provider."""

    PENDING = "pending"
    """Accepted, not final yet (Stripe ``pending``/``requires_action``); poll again later."""
    SUCCEEDED = "succeeded"
    """The money went back."""
    FAILED = "failed"
    """The provider gave up after accepting it (Stripe ``failed``/``canceled``); no money moved."""


@dataclass(frozen=True)
class ProviderCharge:
    """A payment as the provider reports it."""

    id: str
    """The provider's id (Stripe PaymentIntent id, sandbox charge id)."""
    state: ChargeState
    failure_reason: str | None = None


@dataclass(frozen=True)
class ProviderRefund:
    """A refund as the provider reports it."""

    id: str
    """The provider's refund id."""
    amount: int
    currency: str
    state: RefundState
    failure_reason: str | None = None


class PaymentProvider(Protocol):
    """A payment provider adapter. Every call may raise a :class:`ProviderError`."""

    @property
    def name(self) -> str:
        """Stable name stored with each payment (``sandbox``, ``stripe``)."""
        ...

    async def create_payment(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        description: str,
        payment_method: str | None,
    ) -> ProviderCharge:
        """Charge ``amount``; ``payment_id`` is the idempotency key (a repeat charges once)."""
        ...

    async def find_payment(self, *, payment_id: str, since: datetime) -> ProviderCharge | None:
        """The charge made for ``payment_id`` (its idempotency key), or None if there is none.

        ``since`` is when the payment was created: no charge for it is older, so a provider
        may search only from there.
        """
        ...

    async def create_refund(
        self, *, charge_id: str, refund_id: str, amount: int, currency: str
    ) -> ProviderRefund:
        """Refund part of a charge; ``refund_id`` goes as Idempotency-Key and as metadata."""
        ...

    async def find_refund(self, *, charge_id: str, refund_id: str) -> ProviderRefund | None:
        """The refund of this charge created for ``refund_id``, or None if there is none."""
        ...

    async def get_refund(self, refund_ref: str) -> ProviderRefund:
        """Current state of a refund by the provider's id."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
