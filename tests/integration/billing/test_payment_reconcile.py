"""The payment reconcile settles payments left PENDING from what the provider says."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from cloudphone.billing import store
from cloudphone.billing.models import Payment, PaymentStatus
from cloudphone.billing.providers.base import ProviderCharge, ProviderUnknownOutcome
from cloudphone.billing.service import BillingService
from cloudphone.billing.testing import ScriptedProvider
from cloudphone.domain import Principal, UnavailableError
from tests.integration.billing.conftest import MakeBilling
from tests.support.billing_harness import Billing

LATER = timedelta(minutes=10, seconds=1)
"""Past the default reconcile age."""


@dataclass
class AskedProvider(ScriptedProvider):
    """A scripted provider that also records which payments were looked up."""

    asked: list[str] = field(default_factory=list)

    async def find_payment(self, *, payment_id: str, since: datetime) -> ProviderCharge | None:
        """Record the lookup, then answer like the wrapped provider."""
        self.asked.append(payment_id)
        return await super().find_payment(payment_id=payment_id, since=since)


@pytest.fixture
async def scripted(make_billing: MakeBilling) -> tuple[Billing, AskedProvider]:
    """Billing whose sandbox is wrapped: lost answers, failed lookups, recorded lookups."""
    wrapped: list[AskedProvider] = []

    def providers(sandbox: object) -> dict[str, AskedProvider]:
        wrapped.append(AskedProvider(sandbox))  # type: ignore[arg-type]
        return {"sandbox": wrapped[0]}

    billing = await make_billing(providers=providers)
    return billing, wrapped[0]


async def pending_payment(service: BillingService, user: Principal, amount: int) -> Payment:
    """Pay an order whose answer is lost (the provider raises): the payment stays PENDING."""
    order = await service.create_order(user, amount=amount, currency="EUR", description="phone")
    with pytest.raises(UnavailableError):
        await service.pay_order(user, order.id)
    async with service.db.read() as conn:
        payment = await store.live_payment_of_order_txn(conn, order.id)
    assert payment is not None
    assert payment.status is PaymentStatus.PENDING
    return payment


async def settle(service: BillingService, ids: set[str], *, after: timedelta = LATER) -> dict:
    """One round ``after`` from now; what it did with ``ids`` (other tests' payments aside)."""
    done = await service.reconcile_payments(datetime.now(UTC) + after)
    return {d.payment_id: d for d in done if d.payment_id in ids}


async def test_a_charge_whose_answer_was_lost_settles_success(
    scripted: tuple[Billing, AskedProvider], user: Principal
) -> None:
    """The provider charged, the answer was lost: the reconcile finds the charge → SUCCESS, PAID."""
    billing, provider = scripted
    provider.lose_answer("create_payment")
    payment = await pending_payment(billing.service, user, 3000)

    young = await settle(billing.service, {payment.id}, after=timedelta(0))
    assert young == {}  # not old enough: a client may still be paying it
    [done] = (await settle(billing.service, {payment.id})).values()

    assert done.status is PaymentStatus.SUCCESS
    paid = await billing.service.get_payment(user, payment.id)
    assert paid.status == "SUCCESS"
    assert (paid.provider_payment_id or "").startswith("sb_ch_")
    assert paid.reconcile_note == done.note
    assert f"charge {paid.provider_payment_id} succeeded; SUCCESS" in (paid.reconcile_note or "")
    assert (await billing.service.get_order(user, payment.order_id)).status == "PAID"
    assert await settle(billing.service, {payment.id}) == {}  # settled once, never again
    assert provider.calls["create_payment"] == 1


async def test_no_charge_at_the_provider_fails_the_payment(
    scripted: tuple[Billing, AskedProvider], user: Principal
) -> None:
    """Nothing was charged: FAILED "no charge found", and the order can be paid again."""
    billing, provider = scripted
    provider.fail("create_payment", error=ProviderUnknownOutcome("read timed out"), times=1)
    payment = await pending_payment(billing.service, user, 1200)

    [done] = (await settle(billing.service, {payment.id})).values()

    assert done.status is PaymentStatus.FAILED
    failed = await billing.service.get_payment(user, payment.id)
    assert failed.status == "FAILED"
    assert (failed.failure_reason or "").startswith("no charge found: sandbox has no charge")
    assert "no charge found; FAILED" in (failed.reconcile_note or "")
    assert (await billing.service.get_order(user, payment.order_id)).status == "PENDING"
    again = await billing.service.pay_order(user, payment.order_id)
    assert (again.status, again.id != payment.id) == ("SUCCESS", True)


async def test_a_provider_that_does_not_answer_leaves_it_pending_with_a_note(
    scripted: tuple[Billing, AskedProvider], user: Principal
) -> None:
    """No answer: still PENDING, the note says why; the next try waits another age."""
    billing, provider = scripted
    provider.lose_answer("create_payment")
    payment = await pending_payment(billing.service, user, 800)
    provider.fail("find_payment", error=ProviderUnknownOutcome("sandbox: 503"), times=1)

    [done] = (await settle(billing.service, {payment.id})).values()

    assert done.status is PaymentStatus.PENDING
    kept = await billing.service.get_payment(user, payment.id)
    assert kept.status == "PENDING"
    assert "no answer (sandbox: 503); still PENDING" in (kept.reconcile_note or "")
    assert await settle(billing.service, {payment.id}, after=LATER * 1.5) == {}
    [later] = (await settle(billing.service, {payment.id}, after=LATER * 2)).values()
    assert later.status is PaymentStatus.SUCCESS


async def test_rounds_running_at_once_ask_about_each_payment_once(
    make_billing: MakeBilling, scripted: tuple[Billing, AskedProvider], user: Principal
) -> None:
    """Four workers' rounds at once: every payment is claimed, asked about and settled once."""
    billing, provider = scripted
    provider.lose_answer("create_payment", times=None)
    mine = {(await pending_payment(billing.service, user, 100 + i)).id for i in range(6)}
    others = [await make_billing(providers=lambda _: {"sandbox": provider}) for _ in range(3)]

    rounds = await asyncio.gather(
        *(settle(b.service, mine) for b in [billing, *others]),
    )

    settled = [d for done in rounds for d in done.values()]
    assert sorted(d.payment_id for d in settled) == sorted(mine)
    assert {d.status for d in settled} == {PaymentStatus.SUCCESS}
    assert sorted(p for p in provider.asked if p in mine) == sorted(mine)


async def test_a_client_paying_again_during_the_round_wins(
    scripted: tuple[Billing, AskedProvider], user: Principal
) -> None:
    """The customer pays again while the round asks: the round's "no charge" is not recorded.

    The provider had nothing when the round asked; the customer's new attempt then charged
    and lost its answer too. Failing the payment would hide a real charge.
    """
    billing, provider = scripted
    provider.fail("create_payment", error=ProviderUnknownOutcome("read timed out"), times=1)
    payment = await pending_payment(billing.service, user, 700)
    answer = provider.inner.find_payment

    async def lookup_then_customer_pays(*, payment_id: str, since: datetime) -> object:
        found = await answer(payment_id=payment_id, since=since)  # nothing charged yet
        if payment_id == payment.id:
            provider.lose_answer("create_payment")
            with pytest.raises(UnavailableError):
                await billing.service.pay_order(user, payment.order_id)  # same payment
        return found

    provider.inner.find_payment = lookup_then_customer_pays  # type: ignore[method-assign]

    [done] = (await settle(billing.service, {payment.id})).values()

    assert done.status is PaymentStatus.PENDING
    assert "overtaken by another attempt" in done.note
    kept = await billing.service.get_payment(user, payment.id)
    assert (kept.status, kept.failure_reason) == ("PENDING", None)
    provider.inner.find_payment = answer  # type: ignore[method-assign]
    [later] = (await settle(billing.service, {payment.id}, after=LATER * 2)).values()
    assert later.status is PaymentStatus.SUCCESS
    assert (await billing.service.get_order(user, payment.order_id)).status == "PAID"
