"""Bad input is refused with a clear reason, and nothing is written (service level)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudphone.domain import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    Principal,
)
from tests.support.billing_harness import ADMIN, Billing

BAD_REFUNDS = [
    pytest.param({"amount": 0}, InvalidInputError, "invalid_amount", id="zero"),
    pytest.param({"amount": -5}, InvalidInputError, "invalid_amount", id="negative"),
    pytest.param({"amount": 5001}, InvalidInputError, "amount_exceeds_refundable", id="too-much"),
    pytest.param(
        {"amount": 100, "currency": "USD"}, InvalidInputError, "currency_mismatch", id="currency"
    ),
    pytest.param(
        {"amount": 100, "currency": "EURO"}, InvalidInputError, "invalid_currency", id="not-iso"
    ),
    pytest.param(
        {"amount": 100, "reason": "x" * 501}, InvalidInputError, "invalid_input", id="long-reason"
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "code"), BAD_REFUNDS)
async def test_bad_refund_request_is_refused_and_writes_nothing(
    billing: Billing, user: Principal, kwargs: dict[str, Any], error: type[DomainError], code: str
) -> None:
    """Each bad request raises its error with a stable code; no refund row, no saga."""
    payment = await billing.paid_payment(user, 5000)
    with pytest.raises(error) as raised:
        await billing.service.request_refund(user, payment.id, **kwargs)
    assert raised.value.code == code
    assert raised.value.message
    assert await billing.counts(payment.id) == {"refunds": 0, "sagas": 0}
    assert (await billing.service.get_payment(user, payment.id)).status == "SUCCESS"


async def test_other_users_and_unknown_payments_are_not_found(
    billing: Billing, user: Principal, other_user: Principal
) -> None:
    """Another user's payment looks exactly like a missing one; an admin sees it."""
    payment = await billing.paid_payment(user, 5000)
    for payment_id in (payment.id, "no-such-payment"):
        with pytest.raises(NotFoundError):
            await billing.service.request_refund(other_user, payment_id, amount=100)
    with pytest.raises(NotFoundError):
        await billing.service.get_payment(other_user, payment.id)
    with pytest.raises(NotFoundError):
        await billing.service.get_order(other_user, payment.order_id)
    assert await billing.counts(payment.id) == {"refunds": 0, "sagas": 0}
    assert (await billing.service.get_payment(ADMIN, payment.id)).id == payment.id


async def test_unpaid_or_fully_refunded_payments_cannot_be_refunded(
    billing: Billing, user: Principal
) -> None:
    """A declined payment is 409 payment_not_refundable; nothing written."""
    order = await billing.service.create_order(
        user, amount=1000, currency="eur", description="declined"
    )
    declined = await billing.service.pay_order(
        user, order.id, payment_method="pm_card_chargeCustomerFail"
    )
    assert declined.status == "FAILED"
    assert "declined" in (declined.failure_reason or "")
    with pytest.raises(ConflictError) as raised:
        await billing.service.request_refund(user, declined.id, amount=100)
    assert raised.value.code == "payment_not_refundable"
    assert await billing.counts(declined.id) == {"refunds": 0, "sagas": 0}
    # The order can be paid again after a decline.
    again = await billing.service.pay_order(user, order.id)
    assert again.status == "SUCCESS"
    assert again.currency == "EUR"


BAD_ORDERS = [
    pytest.param({"amount": 0, "currency": "EUR"}, id="zero"),
    pytest.param({"amount": 10, "currency": "XYZ"}, id="currency"),
    pytest.param({"amount": 10, "currency": "EUR", "description": "  "}, id="empty-description"),
]


@pytest.mark.parametrize("kwargs", BAD_ORDERS)
async def test_bad_orders_are_refused(
    billing: Billing, user: Principal, kwargs: dict[str, Any]
) -> None:
    """Orders need a positive amount, an ISO 4217 currency and a description."""
    with pytest.raises(InvalidInputError):
        await billing.service.create_order(user, **{"description": "phone", **kwargs})


async def test_paying_twice_or_with_an_unknown_provider_is_refused(
    billing: Billing, user: Principal
) -> None:
    """A PAID order cannot be paid again; an unconfigured provider is a 422."""
    payment = await billing.paid_payment(user, 1000)
    with pytest.raises(ConflictError):
        await billing.service.pay_order(user, payment.order_id)
    order = await billing.service.create_order(user, amount=10, currency="EUR", description="x")
    with pytest.raises(InvalidInputError) as raised:
        await billing.service.pay_order(user, order.id, provider="paypal")
    assert raised.value.code == "unknown_provider"
    cancelled = await billing.service.cancel_order(user, order.id)
    assert cancelled.status == "CANCELLED"
    with pytest.raises(ConflictError):
        await billing.service.pay_order(user, order.id)
