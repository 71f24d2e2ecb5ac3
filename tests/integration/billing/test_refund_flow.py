"""Refunds that go through: full, partial, repeated keys, slow ("pending") provider refunds."""

from __future__ import annotations

import pytest

from cloudphone.billing.config import SandboxConfig
from cloudphone.billing.refund import CALL_PROVIDER_REFUND
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import EventKind, SagaStatus
from tests.support.billing_harness import Billing


async def test_full_refund_completes_and_marks_payment_and_order_refunded(
    billing: Billing, user: Principal
) -> None:
    """Full refund: saga COMPLETED, payment and order REFUNDED, one refund at the provider."""
    payment = await billing.paid_payment(user, 5000)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000, reason="broken")
    assert run.status is SagaStatus.COMPLETED
    assert run.data.keys() >= {"refund_id", "payment_id", "order_id", "provider_refund_id"}
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.refunded_amount, paid.held_by_refund) == ("REFUNDED", 5000, None)
    refund = await billing.service.get_refund(user, refund_id)
    assert (refund.status, refund.amount, refund.reason) == ("SUCCEEDED", 5000, "broken")
    at_provider = await billing.sandbox.refunds_of(paid.provider_payment_id or "")
    assert [(r.id, r.amount) for r in at_provider] == [(refund.provider_refund_id, 5000)]
    order = await billing.service.get_order(user, payment.order_id)
    assert order.status == "REFUNDED"
    steps = [e.step for e in await billing.history(run.id) if e.kind is EventKind.STEP_SUCCEEDED]
    assert steps == [
        "SET_REFUNDING_STATUS",
        "CALL_PROVIDER_REFUND",
        "AWAIT_PROVIDER_REFUND",
        "UPDATE_PAYMENT_STATUS",
        "UPDATE_ORDER_STATUS",
    ]


async def test_partial_refunds_add_up_to_refunded(billing: Billing, user: Principal) -> None:
    """Partial refunds: PARTIALLY_REFUNDED with the running total, then REFUNDED at the end."""
    payment = await billing.paid_payment(user, 10_000)
    async with billing.engine.worker():
        first, _ = await billing.refund_and_wait(user, payment.id, 2500)
        mid = await billing.service.get_payment(user, payment.id)
        order_mid = await billing.service.get_order(user, payment.order_id)
        second, _ = await billing.refund_and_wait(user, payment.id, 7500)
    assert first.status is second.status is SagaStatus.COMPLETED
    assert (mid.status, mid.refunded_amount) == ("PARTIALLY_REFUNDED", 2500)
    assert order_mid.status == "PARTIALLY_REFUNDED"
    done = await billing.service.get_payment(user, payment.id)
    assert (done.status, done.refunded_amount) == ("REFUNDED", 10_000)
    refunds = await billing.service.list_refunds(user, payment.id)
    assert [(r.amount, r.status) for r in refunds] == [(2500, "SUCCEEDED"), (7500, "SUCCEEDED")]
    assert (await billing.service.get_order(user, payment.order_id)).status == "REFUNDED"


async def test_same_idempotency_key_returns_the_first_request(
    billing: Billing, user: Principal
) -> None:
    """The same key on the same payment returns the first refund and saga; nothing new."""
    payment = await billing.paid_payment(user, 3000)
    first = await billing.service.request_refund(
        user, payment.id, amount=1000, idempotency_key="k-1"
    )
    again = await billing.service.request_refund(
        user, payment.id, amount=1000, idempotency_key="k-1"
    )
    assert first.created
    assert not again.created
    assert (again.saga_id, again.refund.id) == (first.saga_id, first.refund.id)
    with pytest.raises(ConflictError) as reused:
        await billing.service.request_refund(user, payment.id, amount=999, idempotency_key="k-1")
    assert reused.value.code == "idempotency_key_reused"
    assert await billing.counts(payment.id) == {"refunds": 1, "sagas": 1}


async def test_second_refund_while_one_is_in_flight_is_409(
    billing: Billing, user: Principal
) -> None:
    """One refund at a time per payment: a second request before the first ends gets 409."""
    payment = await billing.paid_payment(user, 3000)
    await billing.service.request_refund(user, payment.id, amount=1000)
    with pytest.raises(ConflictError) as busy:
        await billing.service.request_refund(user, payment.id, amount=500)
    assert busy.value.code == "refund_in_progress"
    assert await billing.counts(payment.id) == {"refunds": 1, "sagas": 1}


async def test_pending_provider_refund_is_polled_until_it_succeeds(
    billing: Billing, user: Principal
) -> None:
    """A refund the provider answers "pending" shows PROCESSING, is polled, then SUCCEEDED."""
    billing.sandbox.faults = SandboxConfig(pending_polls=3)
    payment = await billing.paid_payment(user, 4000)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 4000)
    assert run.status is SagaStatus.COMPLETED
    events = await billing.history(run.id)
    postponed = [e for e in events if e.kind is EventKind.STEP_POSTPONED]
    assert [e.step for e in postponed] == ["AWAIT_PROVIDER_REFUND"] * 2
    assert (await billing.service.get_refund(user, refund_id)).status == "SUCCEEDED"
    assert (await billing.service.get_payment(user, payment.id)).status == "REFUNDED"


async def test_refund_failed_later_by_provider_is_handled_forward(
    billing: Billing, user: Principal
) -> None:
    """Pending, then failed at the provider: no money moved, so the payment is refundable again."""
    billing.sandbox.faults = SandboxConfig(pending_polls=2, pending_outcome="failed")
    payment = await billing.paid_payment(user, 4000)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 1000)
    assert run.status is SagaStatus.COMPLETED  # forward: no compensation after the pivot
    kinds = {e.kind for e in await billing.history(run.id)}
    assert EventKind.COMPENSATION_STARTED not in kinds
    refund = await billing.service.get_refund(user, refund_id)
    assert refund.status == "FAILED"
    assert "failed" in (refund.failure_reason or "")
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.refunded_amount, paid.held_by_refund) == ("SUCCESS", 0, None)
    assert (await billing.service.get_order(user, payment.order_id)).status == "PAID"


async def test_pivot_sends_the_refund_id_as_idempotency_key(
    billing: Billing, user: Principal
) -> None:
    """The provider sees the refund id as key: a repeat create returns the same refund."""
    payment = await billing.paid_payment(user, 2000)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 2000)
    assert run.status is SagaStatus.COMPLETED
    found = await billing.sandbox.find_refund(
        charge_id=payment.provider_payment_id or "", refund_id=refund_id
    )
    assert found is not None
    assert found.id == run.data["provider_refund_id"]
    assert CALL_PROVIDER_REFUND in {e.step for e in await billing.history(run.id)}
