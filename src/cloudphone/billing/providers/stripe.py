"""The Stripe adapter: the official ``stripe`` SDK (v16, async API through httpx).

* The secret key comes from settings as a ``SecretStr``; it is handed to the SDK and nowhere
  else — never to saga data, events, errors or logs.
* The SDK's own retries are off (``max_network_retries=0``): the refund saga owns retries and
  must see every unknown outcome.
* Refunds carry the refund id as ``Idempotency-Key`` *and* as ``metadata.refund_id``. Stripe
  has no refund search, so :meth:`StripeProvider.find_refund` lists the PaymentIntent's refunds
  and filters on the metadata (localstripe ignores Idempotency-Key; real Stripe honours it).
* Errors are classified as in ``research/stripe/NOTES.md`` §4: ``ConnectionRefusedError``
  anywhere in the cause chain means nothing was sent, and a 429 (rate limited, or a lock
  timeout) means Stripe turned the request away unprocessed: both are *refused* (nothing done,
  retry later). A 4xx that Stripe marks ``Stripe-Should-Retry: true``, a 409, a 5xx, timeouts
  and resets after sending are *unknown outcomes* (retried; the refund saga asks Stripe first).
  Only the remaining 4xx are rejections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta
from typing import TypeVar

import aiohttp
import stripe

from cloudphone.billing.config import BillingConfig
from cloudphone.billing.providers.base import (
    ChargeState,
    ProviderCharge,
    ProviderError,
    ProviderRefund,
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
    RefundState,
)

T = TypeVar("T")

_REFUND_STATES = {
    "succeeded": RefundState.SUCCEEDED,
    "pending": RefundState.PENDING,
    "requires_action": RefundState.PENDING,
    "failed": RefundState.FAILED,
    "canceled": RefundState.FAILED,
}
"""Stripe refund status → ours; an unknown status is treated as pending (poll again)."""

_INTENT_STATES = {
    "succeeded": ChargeState.SUCCEEDED,
    "requires_payment_method": ChargeState.FAILED,  # the confirmation was declined
    "canceled": ChargeState.FAILED,
}
"""PaymentIntent status → ours; every other status is not final yet (pending)."""

_CLOCK_SKEW = timedelta(minutes=5)
"""How much earlier than our record a PaymentIntent may be stamped by Stripe's clock."""


class StripeProvider:
    """Payments and refunds through Stripe (or a local ``localstripe``).

    Args:
        config: The billing settings; ``stripe_api_key`` is required.
    """

    name = "stripe"

    def __init__(self, config: BillingConfig) -> None:
        if config.stripe_api_key is None:
            raise ValueError("the stripe provider needs billing.stripe_api_key")
        # aiohttp rather than httpx: stripe v16 hands httpx raw bytes as ``data=``, which httpx
        # deprecates with a warning on every request. ``sock_connect`` below ``total`` keeps a
        # connect timeout distinguishable from a read timeout.
        self._http = stripe.AIOHTTPClient(
            timeout=aiohttp.ClientTimeout(
                total=(config.stripe_timeout + config.stripe_connect_timeout).total_seconds(),
                sock_connect=config.stripe_connect_timeout.total_seconds(),
            )
        )
        self._client = stripe.StripeClient(
            config.stripe_api_key.get_secret_value(),
            base_addresses=(
                {"api": config.stripe_api_base.rstrip("/")} if config.stripe_api_base else {}
            ),
            http_client=self._http,
            max_network_retries=0,
        )
        self._default_method = config.stripe_payment_method

    def __repr__(self) -> str:
        return "StripeProvider()"  # never show the client (it holds the key)

    async def create_payment(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        description: str,
        payment_method: str | None,
    ) -> ProviderCharge:
        """Create and confirm a PaymentIntent; ``payment_id`` is its Idempotency-Key."""
        intent = await _call(
            self._client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "payment_method": payment_method or self._default_method,
                    "confirm": True,
                    # Metadata, not ``description``: localstripe rejects the latter.
                    "metadata": {"payment_id": payment_id, "description": description[:500]},
                },
                options={"idempotency_key": f"payment-{payment_id}"},
            )
        )
        if intent.status == "succeeded":
            return ProviderCharge(intent.id, ChargeState.SUCCEEDED)
        reason = f"stripe: payment intent is {intent.status}, not succeeded"
        return ProviderCharge(intent.id, ChargeState.FAILED, reason)

    async def find_payment(self, *, payment_id: str, since: datetime) -> ProviderCharge | None:
        """The PaymentIntent whose ``metadata.payment_id`` is ``payment_id``, if any.

        Lists the intents created since ``since`` (less a margin for clock skew) rather than
        using Stripe's search, whose index lags behind writes: "none found" must be true.
        """
        created = int((since - _CLOCK_SKEW).timestamp())
        page = await _call(
            self._client.v1.payment_intents.list_async(
                params={"created": {"gte": created}, "limit": 100}
            )
        )
        try:
            async for intent in page.auto_paging_iter():
                if _metadata(intent.metadata, "payment_id") == payment_id:
                    return _charge(intent)
        except stripe.StripeError as error:
            raise _classify(error) from None
        return None

    async def create_refund(
        self, *, charge_id: str, refund_id: str, amount: int, currency: str
    ) -> ProviderRefund:
        """Refund part of a PaymentIntent, keyed by ``refund_id``."""
        refund = await _call(
            self._client.v1.refunds.create_async(
                params={
                    "payment_intent": charge_id,
                    "amount": amount,
                    "metadata": {"refund_id": refund_id},
                },
                options={"idempotency_key": refund_id},
            )
        )
        return _refund(refund)

    async def find_refund(self, *, charge_id: str, refund_id: str) -> ProviderRefund | None:
        """The PaymentIntent's refund whose ``metadata.refund_id`` is ``refund_id``, if any."""
        page = await _call(
            self._client.v1.refunds.list_async(params={"payment_intent": charge_id, "limit": 100})
        )
        try:
            async for refund in page.auto_paging_iter():
                if _refund_key(refund) == refund_id:
                    return _refund(refund)
        except stripe.StripeError as error:
            raise _classify(error) from None
        return None

    async def get_refund(self, refund_ref: str) -> ProviderRefund:
        """A refund by its Stripe id."""
        return _refund(await _call(self._client.v1.refunds.retrieve_async(refund_ref)))

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in stripe v16


async def _call(request: Awaitable[T]) -> T:
    try:
        return await request
    except stripe.StripeError as error:
        raise _classify(error) from None
    except TimeoutError as error:
        raise ProviderUnknownOutcome(f"stripe: timed out ({error})") from None


def _refund(refund: stripe.Refund) -> ProviderRefund:
    state = _REFUND_STATES.get(refund.status or "", RefundState.PENDING)
    reason = None
    if state is RefundState.FAILED:
        reason = f"stripe: refund {refund.status} ({refund.failure_reason or 'no reason given'})"
    return ProviderRefund(refund.id, refund.amount, refund.currency.upper(), state, reason)


def _refund_key(refund: stripe.Refund) -> str | None:
    return _metadata(refund.metadata, "refund_id")


def _metadata(metadata: stripe.StripeObject | None, key: str) -> str | None:
    value = metadata.to_dict().get(key) if metadata is not None else None
    return value if isinstance(value, str) else None


def _charge(intent: stripe.PaymentIntent) -> ProviderCharge:
    state = _INTENT_STATES.get(intent.status, ChargeState.PENDING)
    reason = None
    if state is ChargeState.FAILED:
        error = intent.last_payment_error
        detail = (error.message if error is not None else None) or "no reason given"
        reason = f"stripe: payment intent is {intent.status} ({detail})"
    return ProviderCharge(intent.id, state, reason)


def _classify(error: stripe.StripeError) -> ProviderError:
    """Map an SDK error to rejected / refused / unknown (see the module docstring)."""
    status = error.http_status
    detail = error.user_message or type(error).__name__
    if isinstance(error, stripe.APIConnectionError):
        if any(isinstance(c, ConnectionRefusedError) for c in _causes(error)):
            return ProviderRefused("stripe: connection refused (nothing was sent)")
        return ProviderUnknownOutcome(f"stripe: connection lost or timed out ({detail})")
    code = f"{error.code}: " if error.code else ""
    if status == 429:
        return ProviderRefused(f"stripe: 429 {code}{detail} (not processed; retry later)")
    if status is not None and 400 <= status < 500 and status != 409 and not _should_retry(error):
        return ProviderRejected(f"stripe: {status} {code}{detail}")
    return ProviderUnknownOutcome(f"stripe: {status or 'no status'} {code}{detail}")


def _should_retry(error: stripe.StripeError) -> bool:
    """Whether Stripe said ``Stripe-Should-Retry: true`` (header names are case-insensitive)."""
    headers = error.headers or {}
    return any(
        name.lower() == "stripe-should-retry" and str(value).lower() == "true"
        for name, value in headers.items()
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps: ``__cause__``, ``__context__``, args, ``.reason``."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__])
        stack.extend(a for a in item.args if isinstance(a, BaseException))
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
