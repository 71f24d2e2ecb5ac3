"""The Stripe adapter against a real localstripe server, through the refund saga."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from cloudphone.billing.providers.base import ProviderRefused, ProviderRejected
from cloudphone.billing.providers.stripe import StripeProvider
from cloudphone.billing.testing import ScriptedProvider
from cloudphone.domain import Principal, UnavailableError
from cloudphone.saga import EventKind, SagaStatus
from tests.integration.billing.conftest import MakeBilling
from tests.support.billing_harness import Billing
from tests.support.billing_localstripe import API_KEY, LocalStripe, free_port
from tests.support.billing_stripe_proxy import StripeFaultProxy


@dataclass
class StripeWired:
    billing: Billing
    scripted: ScriptedProvider
    stripe: StripeProvider


@pytest.fixture
async def wired(make_billing: MakeBilling, localstripe: LocalStripe) -> StripeWired:
    stripe = StripeProvider(localstripe.config())
    scripted = ScriptedProvider(stripe)
    billing = await make_billing(providers=lambda sandbox: {"sandbox": sandbox, "stripe": scripted})
    return StripeWired(billing, scripted, stripe)


async def test_full_and_partial_refunds_through_localstripe(
    wired: StripeWired, user: Principal
) -> None:
    """A confirmed PaymentIntent refunded in two parts: two refunds at Stripe, REFUNDED."""
    billing = wired.billing
    payment = await billing.paid_payment(user, 5000, provider="stripe")
    assert (payment.provider_payment_id or "").startswith("pi_")
    async with billing.engine.worker():
        first, first_id = await billing.refund_and_wait(user, payment.id, 2000)
        mid = await billing.service.get_payment(user, payment.id)
        second, second_id = await billing.refund_and_wait(user, payment.id, 3000)
    assert first.status is second.status is SagaStatus.COMPLETED
    assert (mid.status, mid.refunded_amount) == ("PARTIALLY_REFUNDED", 2000)
    done = await billing.service.get_payment(user, payment.id)
    assert (done.status, done.refunded_amount) == ("REFUNDED", 5000)
    for refund_id, amount in ((first_id, 2000), (second_id, 3000)):
        at_stripe = await wired.stripe.find_refund(
            charge_id=done.provider_payment_id or "", refund_id=refund_id
        )
        assert at_stripe is not None
        assert (at_stripe.amount, at_stripe.state) == (amount, "succeeded")
        refund = await billing.service.get_refund(user, refund_id)
        assert refund.provider_refund_id == at_stripe.id


async def test_lost_answer_is_found_by_metadata_not_refunded_twice(
    wired: StripeWired, user: Principal
) -> None:
    """Localstripe ignores Idempotency-Key: the metadata lookup alone keeps it to one refund."""
    billing = wired.billing
    payment = await billing.paid_payment(user, 4000, provider="stripe")
    wired.scripted.lose_answer("create_refund")
    async with billing.engine.worker():
        run, _ = await billing.refund_and_wait(user, payment.id, 4000)
    assert run.status is SagaStatus.COMPLETED
    assert wired.scripted.calls["create_refund"] == 1
    assert wired.scripted.calls["find_refund"] == 1
    failures = [e for e in await billing.history(run.id) if e.kind is EventKind.STEP_FAILED]
    assert [e.detail["error"]["type"] for e in failures] == ["RefundOutcomeUnknown"]
    refunds = await wired.stripe._client.v1.refunds.list_async(
        params={"payment_intent": payment.provider_payment_id or ""}
    )
    assert len(refunds.data) == 1
    assert (await billing.service.get_payment(user, payment.id)).status == "REFUNDED"


async def test_stripe_unreachable_compensates_and_keeps_the_key_secret(
    wired: StripeWired, user: Principal, localstripe: LocalStripe
) -> None:
    """Connection refused (nothing sent) → COMPENSATED; the API key is in no saga record."""
    billing = wired.billing
    payment = await billing.paid_payment(user, 3000, provider="stripe")
    dead = StripeProvider(localstripe.config(stripe_api_base=f"http://127.0.0.1:{free_port()}"))
    wired.scripted.inner = dead
    try:
        async with billing.engine.worker():
            run, refund_id = await billing.refund_and_wait(user, payment.id, 3000)
    finally:
        wired.scripted.inner = wired.stripe  # closed with the billing wiring
        await dead.close()
    assert run.status is SagaStatus.COMPENSATED
    refund = await billing.service.get_refund(user, refund_id)
    assert refund.status == "FAILED"
    assert "connection refused" in (refund.failure_reason or "")
    assert (await billing.service.get_payment(user, payment.id)).status == "SUCCESS"
    recorded = json.dumps(
        [run.data, [e.detail for e in await billing.history(run.id)], repr(refund)]
    )
    assert API_KEY not in recorded
    assert API_KEY not in repr(wired.stripe)


async def test_errors_are_classified(localstripe: LocalStripe) -> None:
    """Refused port → ProviderRefused; an unknown refund (404) → ProviderRejected."""
    dead = StripeProvider(localstripe.config(stripe_api_base=f"http://127.0.0.1:{free_port()}"))
    live = StripeProvider(localstripe.config())
    try:
        with pytest.raises(ProviderRefused):
            await dead.create_refund(charge_id="pi_x", refund_id="r", amount=1, currency="EUR")
        with pytest.raises(ProviderRejected):
            await live.get_refund("re_does_not_exist")
    finally:
        await dead.close()
        await live.close()


async def test_rate_limited_refund_is_retried_and_completes(
    make_billing: MakeBilling,
    localstripe: LocalStripe,
    stripe_proxy: StripeFaultProxy,
    user: Principal,
) -> None:
    """Stripe answers 429 twice to the refund: retried (not a rejection), one refund, REFUNDED."""
    stripe = StripeProvider(localstripe.config(stripe_api_base=stripe_proxy.base))
    billing = await make_billing(providers=lambda sandbox: {"sandbox": sandbox, "stripe": stripe})
    payment = await billing.paid_payment(user, 2500, provider="stripe")
    stripe_proxy.rate_limit("POST", "/v1/refunds", times=2)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 2500)
    assert run.status is SagaStatus.COMPLETED, run.error
    failures = [e for e in await billing.history(run.id) if e.kind is EventKind.STEP_FAILED]
    assert [e.detail["error"]["type"] for e in failures] == ["RefundNotSent"] * 2
    assert stripe_proxy.seen.count("POST /v1/refunds") == 3
    at_stripe = await stripe._client.v1.refunds.list_async(
        params={"payment_intent": payment.provider_payment_id or ""}
    )
    assert [r.amount for r in at_stripe.data] == [2500]
    assert (await billing.service.get_payment(user, payment.id)).status == "REFUNDED"
    assert (await billing.service.get_refund(user, refund_id)).status == "SUCCEEDED"


async def test_a_lost_payment_answer_is_found_by_metadata_and_settled(
    wired: StripeWired, user: Principal
) -> None:
    """Stripe charged, the answer was lost: the reconcile finds the PaymentIntent → SUCCESS."""
    billing = wired.billing
    order = await billing.service.create_order(
        user, amount=4200, currency="EUR", description="phone"
    )
    wired.scripted.lose_answer("create_payment")
    with pytest.raises(UnavailableError):
        await billing.service.pay_order(user, order.id, provider="stripe")

    later = datetime.now(UTC) + timedelta(minutes=11)
    done = [d for d in await billing.service.reconcile_payments(later) if d.status == "SUCCESS"]
    paid = [await billing.service.get_payment(user, d.payment_id) for d in done]
    [payment] = [p for p in paid if p.order_id == order.id]
    intent = await wired.stripe._client.v1.payment_intents.retrieve_async(
        payment.provider_payment_id or ""
    )
    assert (intent.status, intent.amount, intent.metadata["payment_id"]) == (
        "succeeded",
        4200,
        payment.id,
    )
    assert (await billing.service.get_order(user, order.id)).status == "PAID"


async def test_payment_lookup_tells_charged_declined_and_absent(
    localstripe: LocalStripe, unique: str
) -> None:
    """find_payment: a succeeded intent, a declined one (with why), and none at all."""
    stripe = StripeProvider(localstripe.config())
    ok, declined_id = f"ok-{unique}", f"declined-{unique}"
    since = datetime.now(UTC)
    try:
        charged = await stripe.create_payment(
            payment_id=ok, amount=100, currency="EUR", description="x", payment_method=None
        )
        with pytest.raises(ProviderRejected):
            await stripe.create_payment(
                payment_id=declined_id,
                amount=100,
                currency="EUR",
                description="x",
                payment_method="pm_card_chargeCustomerFail",
            )
        found = await stripe.find_payment(payment_id=ok, since=since)
        declined = await stripe.find_payment(payment_id=declined_id, since=since)
        absent = await stripe.find_payment(payment_id=f"never-{unique}", since=since)
    finally:
        await stripe.close()
    assert found == charged
    assert declined is not None
    assert declined.state == "failed"
    assert "requires_payment_method" in (declined.failure_reason or "")
    assert absent is None
