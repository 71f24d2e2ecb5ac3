"""Billing pieces without I/O: exports, money, the refund saga's shape, error classification."""

from __future__ import annotations

import pytest
import stripe
from multidict import CIMultiDict, CIMultiDictProxy

import cloudphone.billing as billing
from cloudphone.billing.money import Money, check_amount, normalize_currency
from cloudphone.billing.providers.base import (
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
    RefundState,
)
from cloudphone.billing.providers.stripe import _classify
from cloudphone.billing.refund import FinalRefund, RefundTiming, build_refund_saga
from cloudphone.domain import InvalidInputError
from cloudphone.saga import Database, StepKind


def test_public_surface_is_locked() -> None:
    """The billing package exports exactly this list."""
    assert sorted(billing.__all__) == sorted(
        [
            "REFUND_SAGA",
            "BillingService",
            "Money",
            "Order",
            "OrderStatus",
            "Payment",
            "PaymentProvider",
            "PaymentStatus",
            "ProviderError",
            "ProviderRefused",
            "ProviderRejected",
            "ProviderUnknownOutcome",
            "Refund",
            "RefundRequested",
            "RefundStatus",
            "RefundTiming",
            "build_refund_saga",
            "create_billing_schema",
            "metadata",
        ]
    )


@pytest.mark.parametrize(("code", "expected"), [("eur", "EUR"), (" Usd ", "USD"), ("JPY", "JPY")])
def test_currencies_are_normalised(code: str, expected: str) -> None:
    assert normalize_currency(code) == expected


@pytest.mark.parametrize("code", ["", "EURO", "XXX", "XAU", "ABC", "€"])
def test_non_iso_currencies_are_refused(code: str) -> None:
    with pytest.raises(InvalidInputError):
        normalize_currency(code)


@pytest.mark.parametrize("amount", [0, -1, 10**13, True, 1.5])
def test_amounts_must_be_positive_whole_minor_units(amount: object) -> None:
    with pytest.raises(InvalidInputError):
        check_amount(amount)  # type: ignore[arg-type]


def test_money_validates_on_creation() -> None:
    assert Money(1050, "eur") == Money(1050, "EUR")
    with pytest.raises(InvalidInputError):
        Money(0, "EUR")


async def test_refund_saga_has_the_designed_shape(tmp_path: object) -> None:
    """Five steps, the provider call is the pivot, 5-minute deadline, 4 attempts."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        saga = build_refund_saga({}, db)
    finally:
        await db.dispose()
    assert saga.name == "payment_refund"
    assert [(s.name, s.kind, s.transactional) for s in saga.steps] == [
        ("SET_REFUNDING_STATUS", StepKind.COMPENSATABLE, True),
        ("CALL_PROVIDER_REFUND", StepKind.PIVOT, False),
        ("AWAIT_PROVIDER_REFUND", StepKind.RETRIABLE, False),
        ("UPDATE_PAYMENT_STATUS", StepKind.RETRIABLE, True),
        ("UPDATE_ORDER_STATUS", StepKind.RETRIABLE, True),
    ]
    hold, pivot = saga.steps[0], saga.steps[1]
    assert hold.compensation is not None
    assert hold.compensation_transactional
    assert pivot.compensation is not None
    assert not pivot.compensation_transactional
    assert saga.timeout == RefundTiming().deadline
    assert saga.retry.max_attempts == 4


def _connection_error(cause: BaseException) -> stripe.APIConnectionError:
    error = stripe.APIConnectionError("network")
    error.__cause__ = cause
    return error


def _retry_hint(status: int, value: str) -> stripe.StripeError:
    # aiohttp hands the SDK case-insensitive headers; the SDK's own retry logic reads them so.
    headers = CIMultiDictProxy(CIMultiDict({"stripe-should-retry": value}))
    return stripe.InvalidRequestError("busy", None, http_status=status, headers=headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_connection_error(ConnectionRefusedError(111, "refused")), ProviderRefused),
        (_connection_error(ConnectionResetError(104, "reset")), ProviderUnknownOutcome),
        (_connection_error(TimeoutError("read")), ProviderUnknownOutcome),
        (stripe.APIError("boom", http_status=500), ProviderUnknownOutcome),
        (stripe.APIError("unavailable", http_status=503), ProviderUnknownOutcome),
        (stripe.APIError("conflict", http_status=409), ProviderUnknownOutcome),
        (stripe.InvalidRequestError("too big", "amount", http_status=400), ProviderRejected),
        (stripe.CardError("declined", None, "card_declined", http_status=402), ProviderRejected),
        (stripe.RateLimitError("slow down", http_status=429), ProviderRefused),
        (stripe.RateLimitError("locked", http_status=429, code="lock_timeout"), ProviderRefused),
        (_retry_hint(400, "true"), ProviderUnknownOutcome),
        (_retry_hint(400, "false"), ProviderRejected),
    ],
)
def test_stripe_errors_are_classified(error: stripe.StripeError, expected: type) -> None:
    """Rate limits, 5xx, 409, lost connections and Should-Retry are retried; other 4xx reject."""
    assert type(_classify(error)) is expected


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_stripe_throttling_and_outages_are_retried(status: int) -> None:
    """No 429 or 5xx is ever a rejection: the refund saga must not give up on them."""
    error = stripe.StripeError("try later", http_status=status)
    assert isinstance(_classify(error), ProviderRefused | ProviderUnknownOutcome)


def test_the_final_refund_reads_a_run_from_before_per_step_outputs() -> None:
    """An old run's merged data has the wait's answer under the pivot's keys."""
    merged = {
        "refund_id": "r1",
        "provider_refund_id": "re_1",
        "provider_refund_state": "failed",
        "provider_failure_reason": "expired_card",
    }
    assert FinalRefund.model_validate(merged) == FinalRefund(
        final_state=RefundState.FAILED, final_failure_reason="expired_card"
    )
    kept = FinalRefund(final_state=RefundState.SUCCEEDED).model_dump(mode="json")
    assert kept == {"final_state": "succeeded", "final_failure_reason": None}
    assert FinalRefund.model_validate(kept).final_state is RefundState.SUCCEEDED
